// Node 20 has WebAssembly but @types/node@20 does not declare it (TypeScript keeps it in the
// DOM lib, which a server should not pull in). Only what rules-wasm uses.
declare namespace WebAssembly {
  class Memory {
    readonly buffer: ArrayBuffer;
    grow(delta: number): number;
  }
  class Module {}
  interface Instance {
    readonly exports: Record<string, unknown>;
  }
  interface WebAssemblyInstantiatedSource {
    instance: Instance;
    module: Module;
  }
  function instantiate(bytes: BufferSource, imports?: Record<string, Record<string, unknown>>): Promise<WebAssemblyInstantiatedSource>;
  function validate(bytes: BufferSource): boolean;
}
type BufferSource = ArrayBufferView | ArrayBuffer;

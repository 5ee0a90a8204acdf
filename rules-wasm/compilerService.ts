/**
 * Compiles policies on a dedicated worker thread so a process serving traffic never stalls
 * on the AssemblyScript compiler. One thread is enough: compiles are rare and the disk and
 * memory caches make repeats free.
 */
import { Piscina } from 'piscina';
import { PolicyCompileError, type CompileOptions, type CompiledPolicySet } from './compiler.js';
import type { CompileTask, CompileTaskResult } from './compileWorker.js';

export interface PolicyCompilerServiceOptions {
  /** Disk cache for compiled modules. */
  cacheDir?: string | undefined;
  /** Seconds an idle compiler thread is kept. @default 60 */
  idleSeconds?: number;
}

export class PolicyCompilerService {
  readonly #pool: Piscina<CompileTask, CompileTaskResult>;
  readonly #cacheDir: string | undefined;
  #closed: Promise<void> | null = null;

  constructor(options: PolicyCompilerServiceOptions = {}) {
    this.#cacheDir = options.cacheDir;
    this.#pool = new Piscina({
      filename: new URL('./compileWorker.js', import.meta.url).href,
      minThreads: 0,
      maxThreads: 1,
      idleTimeout: (options.idleSeconds ?? 60) * 1000,
    });
  }

  async compile(policies: unknown, options: Omit<CompileOptions, 'cacheDir'> = {}): Promise<CompiledPolicySet> {
    if (this.#closed) throw new Error('PolicyCompilerService is closed');
    const result = await this.#pool.run({ policies, options: { ...options, cacheDir: this.#cacheDir } });
    if (result.ok) return result.compiled;
    throw PolicyCompileError.fromData(result.code, result.message, result.issues);
  }

  close(): Promise<void> {
    this.#closed ??= this.#pool.close();
    return this.#closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

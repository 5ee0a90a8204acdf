/**
 * Policy set → WebAssembly. Normalizes and validates, precomputes the decision table,
 * generates AssemblyScript, and compiles it in-process with the AssemblyScript compiler API.
 * Modules are cached by the hash of their source (memory and, optionally, disk), so a change
 * that only moves table entries swaps in without running the compiler at all.
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { CodedError, type CodeOf } from '../core/codedError.js';
import { CODEGEN_VERSION, generateSource } from './codegen.js';
import { buildLayout, buildTables, PolicyLimitError, type DecisionTables, type PolicyLayout } from './decisionTable.js';
import { normalizePolicies, PolicyValidationError, type NormalizeOptions, type PolicyIssue } from './language.js';
import type { NormalizedPolicySet } from './model.js';

export const COMPILE_ERROR_CODES = {
  invalidPolicy: 'invalid_policy',
  tooManyRoles: 'too_many_roles',
  tableTooLarge: 'table_too_large',
  ascFailed: 'asc_failed',
  internal: 'internal',
} as const;
export type CompileErrorCode = CodeOf<typeof COMPILE_ERROR_CODES>;

export class PolicyCompileError extends CodedError<CompileErrorCode> {
  constructor(
    code: CompileErrorCode,
    message: string,
    readonly issues: readonly PolicyIssue[] = [],
    options?: ErrorOptions,
  ) {
    super(code, message, options);
  }

  /** An error that crossed a thread as plain data (compileWorker.ts); an unknown code is `internal`. */
  static fromData(code: string, message: string, issues: readonly PolicyIssue[] = []): PolicyCompileError {
    const known = (Object.values(COMPILE_ERROR_CODES) as string[]).includes(code);
    return new PolicyCompileError((known ? code : COMPILE_ERROR_CODES.internal) as CompileErrorCode, message, issues);
  }
}

/** Everything needed to run a policy set anywhere: plain data, safe to post to a worker. */
export interface CompiledPolicySet {
  /** Policy version: hash of the module and its tables. Stored with every verdict. */
  hash: string;
  sourceHash: string;
  wasm: Uint8Array;
  source: string;
  set: NormalizedPolicySet;
  layout: PolicyLayout;
  tables: DecisionTables;
  stats: CompileStats;
}

export interface CompileStats {
  policies: number;
  rules: number;
  conditionalRules: number;
  cells: number;
  wasmBytes: number;
  /** Whether the WASM came from the cache (no AssemblyScript run). */
  cached: 'memory' | 'disk' | false;
  compileMs: number;
}

export interface CompileOptions extends NormalizeOptions {
  /** Directory for the disk cache; none keeps the cache in memory only. */
  cacheDir?: string | undefined;
  /** Names the policy set in the generated source's header (e.g. the enterprise). */
  label?: string | undefined;
  /** Where AssemblyScript runs on a cache miss (ascHost.ts); default: in this thread. */
  compileWasm?: ((source: string) => Promise<Uint8Array>) | undefined;
}

const ASC_OPTIONS = { optimizeLevel: 3, shrinkLevel: 0, runtime: 'stub', noAssert: true } as const;
const ASC_VERSION: string = (createRequire(import.meta.url)('assemblyscript/package.json') as { version: string }).version;
const MEMORY_CACHE_LIMIT = 64;
const memoryCache = new Map<string, Uint8Array>();

/** Validates and compiles policies as parsed from JSON (one policy or an array). */
export async function compilePolicies(input: unknown, options: CompileOptions = {}): Promise<CompiledPolicySet> {
  let set: NormalizedPolicySet;
  try {
    set = normalizePolicies(input, options);
  } catch (err) {
    if (err instanceof PolicyValidationError) {
      throw new PolicyCompileError(COMPILE_ERROR_CODES.invalidPolicy, err.message, err.issues, { cause: err });
    }
    throw err;
  }
  return compilePolicySet(set, options);
}

export async function compilePolicySet(set: NormalizedPolicySet, options: CompileOptions = {}): Promise<CompiledPolicySet> {
  const started = performance.now();
  let layout: PolicyLayout;
  try {
    layout = buildLayout(set);
  } catch (err) {
    if (err instanceof PolicyLimitError) {
      throw new PolicyCompileError(err.code === 'too_many_roles' ? COMPILE_ERROR_CODES.tooManyRoles : COMPILE_ERROR_CODES.tableTooLarge, err.message, [], {
        cause: err,
      });
    }
    throw err;
  }
  const { tables, source, sourceHash, hash } = versionParts(set, layout, options.label);
  const { wasm, cached } = await wasmFor(source, sourceHash, options.cacheDir, options.compileWasm ?? compileAssemblyScript);
  return {
    hash,
    sourceHash,
    wasm,
    source,
    set,
    layout,
    tables,
    stats: {
      policies: set.policies.length,
      rules: set.rules.length,
      conditionalRules: tables.conditionalRules.length,
      cells: layout.cells,
      wasmBytes: wasm.byteLength,
      cached,
      compileMs: performance.now() - started,
    },
  };
}

function versionParts(set: NormalizedPolicySet, layout: PolicyLayout, label = 'policy set') {
  const tables = buildTables(set, layout);
  const source = generateSource(set, layout, tables, label);
  const sourceHash = sha256([source, ASC_VERSION, JSON.stringify(ASC_OPTIONS)]);
  const hash = sha256([sourceHash, JSON.stringify(set), JSON.stringify(layout), tables.base, tables.aux, tables.list, tables.ranks]).slice(0, 16);
  return { tables, source, sourceHash, hash };
}

/**
 * The policy version (`CompiledPolicySet.hash`, stored with every verdict) of a normalized set,
 * without compiling it to WebAssembly: what the module would be named. `label` as the compile's.
 * @throws {PolicyLimitError} when the set is too large to compile
 */
export function policyVersionOf(set: NormalizedPolicySet, label?: string): string {
  return versionParts(set, buildLayout(set), label).hash;
}

async function wasmFor(
  source: string,
  sourceHash: string,
  cacheDir: string | undefined,
  compileWasm: (source: string) => Promise<Uint8Array>,
): Promise<{ wasm: Uint8Array; cached: CompileStats['cached'] }> {
  const inMemory = memoryCache.get(sourceHash);
  if (inMemory) return { wasm: inMemory, cached: 'memory' };
  const file = cacheDir ? join(cacheDir, `${sourceHash}.wasm`) : null;
  if (file) {
    const onDisk = await readFile(file).catch(() => null);
    if (onDisk && WebAssembly.validate(onDisk)) {
      remember(sourceHash, onDisk);
      return { wasm: new Uint8Array(onDisk), cached: 'disk' };
    }
  }
  const wasm = await compileWasm(source);
  remember(sourceHash, wasm);
  if (cacheDir && file) {
    // Write then rename, so a reader never sees half a module.
    await mkdir(cacheDir, { recursive: true });
    // Unique per call: worker threads share process.pid, and two of them compiling the same set
    // at once would rename each other's file away (ENOENT), failing a compile that succeeded.
    const tmp = `${file}.${process.pid}.${randomUUID()}.tmp`;
    await writeFile(tmp, wasm);
    await rename(tmp, file);
  }
  return { wasm, cached: false };
}

/** The part of the AssemblyScript compiler API used here. */
interface AscApi {
  compileString(
    sources: Record<string, string>,
    options: typeof ASC_OPTIONS,
  ): Promise<{ error: Error | null; binary: Uint8Array | null; stderr: { toString(): string } }>;
}

// Imported through a variable so TypeScript does not load asc's type declarations: they
// declare AssemblyScript's own globals (console, memory …) over Node's.
const ASC_MODULE = 'assemblyscript/asc';

/** The generated source to WebAssembly, in this thread (asc and Binaryen load on first use). */
export async function compileAssemblyScript(source: string): Promise<Uint8Array> {
  const asc = ((await import(ASC_MODULE)) as { default: AscApi }).default;
  const result = await asc.compileString({ 'policy.ts': source }, ASC_OPTIONS);
  if (result.error || !result.binary) {
    throw new PolicyCompileError(
      COMPILE_ERROR_CODES.ascFailed,
      `AssemblyScript could not compile the generated policy core: ${result.error?.message ?? 'no binary'}\n${result.stderr.toString()}`,
      [],
      { cause: result.error },
    );
  }
  return result.binary;
}

function remember(key: string, wasm: Uint8Array): void {
  if (memoryCache.size >= MEMORY_CACHE_LIMIT) {
    const oldest = memoryCache.keys().next();
    if (!oldest.done) memoryCache.delete(oldest.value);
  }
  memoryCache.set(key, wasm);
}

function sha256(parts: ReadonlyArray<string | Uint32Array>): string {
  const hash = createHash('sha256');
  for (const part of parts) {
    hash.update(typeof part === 'string' ? part : new Uint8Array(part.buffer, part.byteOffset, part.byteLength));
    hash.update('\0');
  }
  return hash.digest('hex');
}

export { CODEGEN_VERSION, ASC_VERSION };

/**
 * Worker side of PolicyCompilerService: runs the AssemblyScript compiler off the caller's
 * event loop. Errors cross the thread boundary as plain data and are rebuilt on the other side.
 */
import { compileAssemblyScript, compilePolicies, PolicyCompileError, type CompileOptions, type CompiledPolicySet } from './compiler.js';

export interface CompileTask {
  policies: unknown;
  options: Omit<CompileOptions, 'compileWasm'>;
}

/** Generated source only (ascHost.ts): the caller has validated and generated it. */
export interface AscTask {
  source: string;
}

/** A failed compile as plain data, to be rebuilt with PolicyCompileError.fromData on the other side. */
export type CompileFailure = { ok: false; code: string; message: string; issues: PolicyCompileError['issues'] };
export type AscTaskResult = { ok: true; wasm: Uint8Array } | CompileFailure;
export type CompileTaskResult = { ok: true; compiled: CompiledPolicySet } | CompileFailure;

/** What a compile threw, as data; an unexpected error keeps its stack (it is a bug to report). */
export function compileFailure(err: unknown): CompileFailure {
  if (err instanceof PolicyCompileError) return { ok: false, code: err.code, message: err.message, issues: err.issues };
  return { ok: false, code: 'internal', message: err instanceof Error ? (err.stack ?? err.message) : String(err), issues: [] };
}

export default async function compileTask(task: CompileTask | AscTask): Promise<CompileTaskResult | AscTaskResult> {
  try {
    if ('source' in task) return { ok: true, wasm: await compileAssemblyScript(task.source) };
    return { ok: true, compiled: await compilePolicies(task.policies, task.options) };
  } catch (err) {
    return compileFailure(err);
  }
}

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

export type AscTaskResult = { ok: true; wasm: Uint8Array } | { ok: false; code: string; message: string };

export type CompileTaskResult = { ok: true; compiled: CompiledPolicySet } | { ok: false; code: string; message: string; issues: PolicyCompileError['issues'] };

export default async function compileTask(task: CompileTask | AscTask): Promise<CompileTaskResult | AscTaskResult> {
  if ('source' in task) {
    try {
      return { ok: true, wasm: await compileAssemblyScript(task.source) };
    } catch (err) {
      if (err instanceof PolicyCompileError) return { ok: false, code: err.code, message: err.message };
      return { ok: false, code: 'internal', message: err instanceof Error ? err.message : String(err) };
    }
  }
  try {
    return { ok: true, compiled: await compilePolicies(task.policies, task.options) };
  } catch (err) {
    if (err instanceof PolicyCompileError) return { ok: false, code: err.code, message: err.message, issues: err.issues };
    return { ok: false, code: 'internal', message: err instanceof Error ? (err.stack ?? err.message) : String(err), issues: [] };
  }
}

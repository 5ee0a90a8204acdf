/**
 * One AssemblyScript compiler per process for the pipeline's worker threads. Loaded in a worker,
 * asc and Binaryen stay for the thread's life (about 50 MB of heap per worker, plus Binaryen's
 * compiled code) and each worker compiles the same policy sets again. Instead, a worker's
 * PolicyRegistry asks its process over a BroadcastChannel ({@link remoteAsc}); the
 * {@link AscHost} there compiles each source once, on a thread that ends when compiles stop.
 * The modules' disk and memory caches (compiler.ts) still answer first, in the worker.
 */
import { BroadcastChannel, threadId } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { COMPILE_ERROR_CODES, PolicyCompileError } from './compiler.js';
import { compileFailure, type AscTask, type AscTaskResult } from './compileWorker.js';

type Request = { kind: 'compile'; id: string; source: string };
type Reply = { kind: 'reply'; id: string } & AscTaskResult;

export interface AscHostOptions {
  /** Seconds the compiler thread outlives its last compile. @default 5 */
  idleSeconds?: number;
}

/** The process side: answers the workers' compile requests on `channel`. */
export class AscHost {
  readonly #channel: BroadcastChannel;
  readonly #pool: Piscina<AscTask, AscTaskResult>;
  /** One compile per source, whichever workers ask for it meanwhile. */
  readonly #running = new Map<string, Promise<AscTaskResult>>();
  #closed = false;
  /** Requests answered, and compiles run for them (fewer when workers asked for the same source). */
  readonly stats = { requests: 0, compiles: 0 };

  constructor(channel: string, options: AscHostOptions = {}) {
    this.#pool = new Piscina({
      filename: new URL('./compileWorker.js', import.meta.url).href,
      minThreads: 0,
      maxThreads: 1,
      idleTimeout: (options.idleSeconds ?? 5) * 1000,
    });
    this.#channel = new BroadcastChannel(channel);
    this.#channel.unref();
    this.#channel.onmessage = (event) => {
      const req = (event as { data: Request | Reply | undefined }).data;
      if (req?.kind === 'compile' && typeof req.source === 'string') void this.#answer(req);
    };
  }

  async #answer(req: Request): Promise<void> {
    this.stats.requests++;
    let running = this.#running.get(req.source);
    if (!running) {
      this.stats.compiles++;
      running = this.#pool.run({ source: req.source }).catch((err: unknown): AscTaskResult => compileFailure(err));
      this.#running.set(req.source, running);
      void running.finally(() => this.#running.delete(req.source));
    }
    const result = await running;
    if (!this.#closed) this.#channel.postMessage({ kind: 'reply', id: req.id, ...result } satisfies Reply);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#channel.close();
    await this.#pool.destroy();
  }
}

/**
 * The worker side: compiles `source` through the {@link AscHost} listening on `channel`.
 * Rejects with a PolicyCompileError as a compile here would, or after `timeoutMs` without an
 * answer (the registry then keeps the previous module and reports it).
 */
export function remoteAsc(channel: string, timeoutMs = 120_000): (source: string) => Promise<Uint8Array> {
  let bc: BroadcastChannel | null = null;
  let next = 0;
  const waiting = new Map<string, { resolve: (wasm: Uint8Array) => void; reject: (err: Error) => void }>();
  const open = (): BroadcastChannel => {
    if (bc) return bc;
    bc = new BroadcastChannel(channel);
    bc.onmessage = (event) => {
      const reply = (event as { data: Request | Reply | undefined }).data;
      if (reply?.kind !== 'reply') return;
      const w = waiting.get(reply.id);
      if (!w) return;
      waiting.delete(reply.id);
      if (reply.ok) w.resolve(reply.wasm);
      else w.reject(PolicyCompileError.fromData(reply.code, reply.message, reply.issues));
      // Nothing left to wait for: the channel must not keep the thread's loop alive.
      if (waiting.size === 0) bc?.unref();
    };
    return bc;
  };
  return (source) =>
    new Promise<Uint8Array>((resolve, reject) => {
      const ch = open();
      ch.ref();
      const id = `${threadId}:${next++}`;
      const timer = setTimeout(() => {
        waiting.delete(id);
        if (waiting.size === 0) ch.unref();
        reject(new PolicyCompileError(COMPILE_ERROR_CODES.internal, `the process's policy compiler did not answer within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      timer.unref();
      waiting.set(id, {
        resolve: (wasm) => (clearTimeout(timer), resolve(wasm)),
        reject: (err) => (clearTimeout(timer), reject(err)),
      });
      ch.postMessage({ kind: 'compile', id, source } satisfies Request);
    });
}

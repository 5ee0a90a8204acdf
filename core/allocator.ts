/**
 * Gives freed memory back to the system. glibc's malloc keeps what a process frees in its
 * arenas: the engine's inserts, the pipeline's multi-megabyte row blocks and a compiler
 * thread's isolate leave the resident size far above what is in use (measured in the pipeline:
 * about 400 MB of a 1.3 GB peak were free chunks kept by malloc). Two glibc knobs, reached
 * through koffi (a maintained FFI with prebuilt binaries; Node has no binding for either):
 * - `mallopt(M_MMAP_THRESHOLD)` fixed, so blocks from that size up are always mapped on their
 *   own and unmapped when freed (glibc otherwise raises the threshold up to 32 MB after the
 *   first large free, and later large blocks come from the arenas and stay there);
 * - `malloc_trim(0)` every few seconds on libuv's thread pool (never on the event loop): it
 *   returns the free pages of every arena.
 * Anywhere else (musl, macOS, koffi missing) it does nothing and says so once.
 */
import { createRequire } from 'node:module';
import type * as Koffi from 'koffi';

const M_MMAP_THRESHOLD = -3;
/** Row blocks, frames and insert buffers from here up are mapped on their own. */
export const MMAP_THRESHOLD_BYTES = 256 * 1024;

export interface AllocatorTrimmer {
  /** Trims done (on the thread pool, not the event loop). */
  readonly stats: { trims: number };
  close(): void;
}

interface Glibc {
  mallopt(param: number, value: number): number;
  trim(done: (err: unknown) => void): void;
}

let glibc: Glibc | null | undefined;
/** Set once: the knobs are process-wide, whoever asks first. */
let thresholdSet = false;

function loadGlibc(): Glibc | null {
  if (glibc !== undefined) return glibc;
  glibc = null;
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  if (process.platform !== 'linux' || !header?.glibcVersionRuntime) return null;
  try {
    // Required here, not imported: a platform without koffi's binary still starts (untrimmed).
    const koffi = createRequire(import.meta.url)('koffi') as typeof Koffi;
    const libc = koffi.load('libc.so.6');
    const mallopt = libc.func('int mallopt(int param, int value)');
    const trim = libc.func('int malloc_trim(size_t pad)');
    glibc = {
      mallopt: (param, value) => mallopt(param, value) as number,
      trim: (done) => trim.async(0, (err: unknown) => done(err)),
    };
  } catch {
    glibc = null;
  }
  return glibc;
}

/**
 * Tunes this process's allocator and starts trimming every `everyMs` (0: the threshold only).
 * Returns null, having logged why, where glibc is not there to tune.
 */
export function startAllocatorTrim(everyMs: number, log?: (msg: string, level?: 'warn') => void): AllocatorTrimmer | null {
  const lib = loadGlibc();
  if (lib === null) {
    log?.('memory: not glibc (or koffi did not load); freed memory is returned as the allocator sees fit', 'warn');
    return null;
  }
  if (!thresholdSet) {
    thresholdSet = lib.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) === 1;
  }
  const stats = { trims: 0 };
  let running = false;
  const timer =
    everyMs > 0
      ? setInterval(() => {
          if (running) return;
          running = true;
          lib.trim(() => {
            running = false;
            stats.trims++;
          });
        }, everyMs)
      : null;
  timer?.unref();
  return {
    stats,
    close() {
      if (timer) clearInterval(timer);
    },
  };
}

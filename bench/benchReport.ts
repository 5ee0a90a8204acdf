/**
 * The shape every benchmark reports in, and the file it lands in: `bench/results/` holds one
 * JSON per run (named by time) and `<name>-latest.json` for the most recent.
 */
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Bench, type Task } from 'tinybench';

export interface BenchRow {
  name: string;
  /** Operations (calls of the measured function) per second. */
  ops_per_s: number;
  /** Units of work per second (events, evaluations …), when one operation covers many. */
  units_per_s: number | null;
  unit: string | null;
  mean_ms: number;
  p99_ms: number;
  rme_percent: number;
  samples: number;
}

export interface BenchCase {
  name: string;
  fn: () => unknown;
  /** How many units (events, evaluations) one call handles. */
  units?: number;
  unit?: string;
}

export const RESULTS_DIR = fileURLToPath(new URL('../../bench/results/', import.meta.url));

export async function runCases(cases: readonly BenchCase[], timeMs = 1000): Promise<BenchRow[]> {
  const bench = new Bench({ time: timeMs, warmupTime: Math.min(500, timeMs / 2) });
  for (const c of cases) bench.add(c.name, c.fn);
  await bench.run();
  return bench.tasks.map((task: Task, i) => {
    const c = cases[i] as BenchCase;
    const r = task.result;
    if (r.state !== 'completed') throw new Error(`benchmark '${c.name}' did not complete: ${r.state === 'errored' ? r.error.message : r.state}`);
    const ops = r.throughput.mean;
    return {
      name: c.name,
      ops_per_s: round(ops),
      units_per_s: c.units ? round(ops * c.units) : null,
      unit: c.unit ?? null,
      mean_ms: round(r.latency.mean, 4),
      p99_ms: round(r.latency.p99, 4),
      rme_percent: round(r.latency.rme, 2),
      samples: r.latency.samplesCount,
    };
  });
}

export function machine(): Record<string, unknown> {
  return { node: process.version, cpus: cpus().length, cpu_model: cpus()[0]?.model ?? 'unknown', memory_gb: round(totalmem() / 2 ** 30, 1) };
}

/** @param dir where to write (tests pass a temporary one) @default RESULTS_DIR */
export async function writeResults(name: string, result: Record<string, unknown>, dir = RESULTS_DIR): Promise<string> {
  await mkdir(dir, { recursive: true });
  const body = JSON.stringify({ benchmark: name, at: new Date().toISOString(), machine: machine(), ...result }, null, 2) + '\n';
  const file = join(dir, `${name}-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  await writeFile(file, body);
  await writeFile(join(dir, `${name}-latest.json`), body);
  return file;
}

/** The newest `<name>-<time>.json` in `dir` (the names sort by time), or null when there is none. */
export async function readNewestResult(name: string, dir = RESULTS_DIR): Promise<{ file: string; result: Record<string, unknown> } | null> {
  const files = (await readdir(dir).catch(() => [] as string[]))
    // `<name>-<timestamp>.json`: not `<name>-latest.json`, nor another benchmark's `<name>-<suffix>-…` (e2e-cluster).
    .filter((f) => f.startsWith(`${name}-`) && /^\d/.test(f.slice(name.length + 1)) && f.endsWith('.json'))
    .sort();
  const newest = files.at(-1);
  if (newest === undefined) return null;
  const file = join(dir, newest);
  return { file, result: JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown> };
}

export function round(n: number, digits = 0): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

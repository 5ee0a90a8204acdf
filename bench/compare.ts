/**
 * `towerwatch bench compare`: the newest results of `bench limits`, `bench e2e` and `bench api`
 * beside the committed baseline (`bench/baseline/`, from a CI run on a 2-core machine), as
 * ratios, so that a regression is visible in CI's output. Reported, never asserted: the machines
 * are shared and noisy, so a ratio is read beside the stage limit measured in the same run.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchReportTable } from './benchTable.js';
import { readNewestResult, RESULTS_DIR, round } from './benchReport.js';

export const BASELINE_DIR = fileURLToPath(new URL('../../bench/baseline/', import.meta.url));
export const COMPARED_BENCHMARKS = ['limits', 'e2e', 'api', 'preview'] as const;
export type ComparedBenchmark = (typeof COMPARED_BENCHMARKS)[number];

export interface Metric {
  readonly benchmark: ComparedBenchmark;
  /** Dotted path into the result; `stages[clickhouse_insert]` picks the stage of that name. */
  readonly path: string;
  readonly better: 'higher' | 'lower';
}

/** What a reader of CI's output wants to see move: throughput, tail latency, memory. */
export const METRICS: readonly Metric[] = [
  { benchmark: 'limits', path: 'limit_events_per_s', better: 'higher' },
  { benchmark: 'limits', path: 'stages[jetstream_consume].events_per_s', better: 'higher' },
  { benchmark: 'limits', path: 'stages[decode_enrich_evaluate].per_core_events_per_s', better: 'higher' },
  { benchmark: 'limits', path: 'stages[row_encoding].per_core_events_per_s', better: 'higher' },
  { benchmark: 'limits', path: 'stages[clickhouse_insert].events_per_s', better: 'higher' },
  { benchmark: 'limits', path: 'pipeline_cpu_us_per_event', better: 'lower' },
  { benchmark: 'e2e', path: 'events_per_s', better: 'higher' },
  { benchmark: 'e2e', path: 'ratio_to_limit', better: 'higher' },
  { benchmark: 'e2e', path: 'cpu_us_per_event', better: 'lower' },
  { benchmark: 'e2e', path: 'latency_ms.p99', better: 'lower' },
  { benchmark: 'e2e', path: 'rss_mb.bench', better: 'lower' },
  { benchmark: 'api', path: 'cached_get.requests_per_s', better: 'higher' },
  { benchmark: 'api', path: 'cached_get.ratio_to_raw_uws', better: 'higher' },
  { benchmark: 'api', path: 'cached_get.latency_ms.p99', better: 'lower' },
  { benchmark: 'api', path: 'dashboard_metrics_24h_uncached_1conn.latency_ms.p99', better: 'lower' },
  { benchmark: 'api', path: 'dashboard_metrics_7d_uncached_1conn.latency_ms.p99', better: 'lower' },
  { benchmark: 'api', path: 'dashboard_alerts.latency_ms.p99', better: 'lower' },
  { benchmark: 'api', path: 'dashboard_alerts_under_ingest.latency_ms.p99', better: 'lower' },
  { benchmark: 'api', path: 'ws_fanout.latency_ms.p99', better: 'lower' },
  { benchmark: 'api', path: 'decisions_one.decisions_per_s', better: 'higher' },
  { benchmark: 'api', path: 'decisions_batch.decisions_per_s', better: 'higher' },
  { benchmark: 'api', path: 'policy_preview.events_per_s', better: 'higher' },
  { benchmark: 'preview', path: 'runs.deny_ai_uploads_for_engineering.events_per_s', better: 'higher' },
  { benchmark: 'preview', path: 'runs.deny_ai_uploads_for_engineering.ratio_to_raw_scan', better: 'higher' },
];

/** Within this factor either way a change is noise on these machines, not a verdict. */
export const NOISE = 1.15;

export interface ComparisonRow {
  benchmark: ComparedBenchmark;
  metric: string;
  baseline: number | null;
  current: number | null;
  /** current ÷ baseline; null when either is missing. */
  ratio: number | null;
  verdict: 'better' | 'worse' | 'within noise' | 'missing';
}

/** The number at `path` in `doc`, or null (a missing field, a stage not run, not a number). */
export function valueAt(doc: unknown, path: string): number | null {
  let at: unknown = doc;
  for (const part of path.split('.')) {
    const stage = /^(\w+)\[(\w+)\]$/.exec(part);
    if (stage) {
      const list = (at as Record<string, unknown> | null)?.[stage[1] as string];
      at = Array.isArray(list) ? list.find((s: unknown) => (s as { stage?: unknown } | null)?.stage === stage[2]) : undefined;
    } else {
      at = typeof at === 'object' && at !== null ? (at as Record<string, unknown>)[part] : undefined;
    }
  }
  return typeof at === 'number' && Number.isFinite(at) ? at : null;
}

export function compareResults(
  baseline: Partial<Record<ComparedBenchmark, unknown>>,
  current: Partial<Record<ComparedBenchmark, unknown>>,
  metrics: readonly Metric[] = METRICS,
): ComparisonRow[] {
  return metrics.map((m) => {
    const before = valueAt(baseline[m.benchmark], m.path);
    const now = valueAt(current[m.benchmark], m.path);
    const ratio = before === null || now === null || before === 0 ? null : now / before;
    const gain = ratio === null ? null : m.better === 'higher' ? ratio : 1 / ratio;
    const verdict = gain === null ? 'missing' : gain > NOISE ? 'better' : gain < 1 / NOISE ? 'worse' : 'within noise';
    return { benchmark: m.benchmark, metric: m.path, baseline: before, current: now, ratio: ratio === null ? null : round(ratio, 2), verdict };
  });
}

async function readBaseline(dir: string, name: ComparedBenchmark): Promise<unknown> {
  try {
    return JSON.parse(await readFile(join(dir, `${name}.json`), 'utf8')) as unknown;
  } catch {
    return undefined;
  }
}

export interface CompareOptions {
  /** @default bench/baseline/ */
  baselineDir?: string | undefined;
  /** @default bench/results/ */
  resultsDir?: string | undefined;
}

/** The newest run of each benchmark in `resultsDir` beside the baseline files. */
export async function compareLatest(options: CompareOptions = {}): Promise<{ rows: ComparisonRow[]; baseline: Partial<Record<ComparedBenchmark, unknown>> }> {
  const baseline: Partial<Record<ComparedBenchmark, unknown>> = {};
  const current: Partial<Record<ComparedBenchmark, unknown>> = {};
  for (const name of COMPARED_BENCHMARKS) {
    baseline[name] = await readBaseline(options.baselineDir ?? BASELINE_DIR, name);
    current[name] = (await readNewestResult(name, options.resultsDir ?? RESULTS_DIR))?.result;
  }
  return { rows: compareResults(baseline, current), baseline };
}

export async function runCompareCli(options: CompareOptions & { json: boolean }): Promise<ComparisonRow[]> {
  const { rows, baseline } = await compareLatest(options);
  if (options.json) {
    process.stdout.write(`${JSON.stringify(rows)}\n`);
  } else {
    const at = (doc: unknown): string => String((doc as { at?: unknown } | undefined)?.at ?? 'none');
    process.stdout.write(`this run beside the baseline (bench/baseline/; e2e baseline from ${at(baseline.e2e)}), ratio = this run ÷ baseline:\n`);
    console.table(benchReportTable(rows));
  }
  return rows;
}

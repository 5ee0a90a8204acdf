/**
 * Insert formats into `app_usage` on the embedded engine (a temporary data directory), at 10k
 * and 100k rows per insert: what the pipeline's ClickHouse sink should send. Each case reports
 * rows/s end to end (encoding in JS + insert, including the projections app_usage keeps) and
 * the two parts separately, plus the longest event-loop stall seen during the inserts (the
 * engine runs on a libuv thread; what stalls the loop is JS-side encoding and copying).
 *
 * Run alone: `node dist/bench/insertBench.js` (prints a table, writes bench/results/insert-*.json).
 * Every insert carries distinct rows: identical blocks would be deduplicated, not inserted.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { APP_USAGE, type AppUsageRow, type ClickHouseHandle, migrate, openClickHouse } from '../core/clickhouse/index.js';
import { round, writeResults } from './benchReport.js';

export type InsertBenchFormat =
  | 'JSONEachRow (client.insert)'
  | 'JSONCompactEachRow (client.insert)'
  | 'TabSeparated (client.insert stream)'
  | 'TabSeparated (raw insert or spool file)'
  | 'Native (spool file, sink path)';

export interface InsertBenchRow {
  format: InsertBenchFormat;
  rows_per_insert: number;
  inserts: number;
  /** End to end: rows / (encode + insert). */
  rows_per_s: number;
  /** Rows / insert time only (JSON formats encode inside client.insert, so they include it). */
  insert_rows_per_s: number;
  /** Mean JS-side encoding time per insert (0 where the client encodes inside insert). */
  encode_ms: number;
  insert_ms: number;
  bytes_per_row: number | null;
  /** Longest event-loop stall during the inserts (encoding excluded). */
  max_loop_delay_ms: number;
}

export interface InsertBenchOptions {
  /** Rows per insert to try. @default [10_000, 100_000] */
  sizes?: readonly number[];
  /** Inserts per format at 100k rows (twice as many at ≤10k); each format is warmed up once with 1,000 rows. @default 2 */
  repeats?: number;
}

export const FORMATS: readonly InsertBenchFormat[] = [
  'JSONEachRow (client.insert)',
  'JSONCompactEachRow (client.insert)',
  'TabSeparated (client.insert stream)',
  'TabSeparated (raw insert or spool file)',
  'Native (spool file, sink path)',
];

/** Deterministic, realistic rows: repeated enterprises, towers, apps; many devices. */
function makeRows(n: number, seqBase: number, eventBase: number): AppUsageRow[] {
  const now = Date.now() - 600_000;
  const rows: AppUsageRow[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const e = eventBase + i;
    const deny = e % 17 === 0;
    rows[i] = {
      enterprise_id: `ent-${e % 20}`,
      ts: now + (i % 60_000),
      carrier: e % 3 === 0 ? 'tmo' : 'att',
      tower_id: `tower-${e % 500}`,
      event_id: e,
      stream_seq: seqBase + Math.floor(i / 1000),
      device_id: `dev-${(e * 7919) % 10_000}`,
      user_id: `user-${e % 3000}`,
      user_name: `User Name ${e % 3000}`,
      app_id: `app-${e % 50}`,
      app_name: `App ${e % 50}`,
      app_category: ['social', 'video', 'games', 'productivity'][e % 4] ?? 'social',
      action_id: `act-${e % 5}`,
      action_name: ['open', 'upload', 'download', 'stream', 'post'][e % 5] ?? 'open',
      bytes_up: (e * 13) % 100_000,
      bytes_down: (e * 17) % 1_000_000,
      verdict: deny ? 'deny' : 'allow',
      policy_id: `pol-${e % 20}`,
      policy_name: 'Default policy',
      rule_id: deny ? `rule-${e % 10}` : '',
      severity: deny ? 'high' : '',
      remediation: deny ? 'notify' : '',
      policy_version: 'v12',
      role_ids: `role-${e % 8},role-${(e + 3) % 8}`,
      region: `region-${e % 6}`,
      os: e % 2 === 0 ? 'iOS' : 'Android',
      os_version: `${14 + (e % 4)}.${e % 3}`,
      decision_inputs: 1,
      shadow_verdict: '',
      shadow_policy_id: '',
      shadow_rule_id: '',
    };
  }
  return rows;
}

export interface Timed {
  encodeMs: number;
  insertMs: number;
  bytes: number | null;
  maxDelayMs: number;
}

/** One insert of `rows` into app_usage in `format`, timed (bench/limits.ts uses it too). */
export async function insertOnce(ch: ClickHouseHandle, format: InsertBenchFormat, rows: AppUsageRow[]): Promise<Timed> {
  const table = `${ch.database}.app_usage`;
  const columns = [...APP_USAGE.columns] as [string, ...string[]];
  let encodeMs = 0;
  let bytes: number | null = null;
  let run: () => Promise<unknown>;
  const settings = { date_time_input_format: 'basic' } as const;
  if (format === 'JSONEachRow (client.insert)') {
    // DateTime64 in JSON as the string '<s>.<mmm>' (a JSON number with a fraction is refused);
    // the JSON encoding itself happens inside client.insert.
    const values = rows.map((r) => ({ ...r, ts: (r.ts / 1000).toFixed(3) }));
    run = () => ch.client.insert({ table, columns, values, format: 'JSONEachRow', clickhouse_settings: settings });
  } else if (format === 'JSONCompactEachRow (client.insert)') {
    const values = rows.map((r) => APP_USAGE.columns.map((c) => (c === 'ts' ? (r.ts / 1000).toFixed(3) : r[c])));
    run = () => ch.client.insert({ table, columns, values, format: 'JSONCompactEachRow', clickhouse_settings: settings });
  } else {
    // Positional values, as the pipeline's batch processor builds them; encoded as its workers do.
    const values = rows.map((r) => APP_USAGE.values(r));
    const native = format === 'Native (spool file, sink path)';
    const t0 = performance.now();
    const body = native ? APP_USAGE.encodeNative(values) : APP_USAGE.encode(values);
    encodeMs = performance.now() - t0;
    bytes = body.byteLength;
    run =
      format === 'TabSeparated (client.insert stream)'
        ? () =>
            ch.client.insert({
              table,
              columns,
              values: Readable.from([body], { objectMode: false }),
              format: 'TabSeparated',
              clickhouse_settings: settings,
            })
        : () => ch.insertFormatted({ table: 'app_usage', columns: APP_USAGE.columns, format: native ? 'Native' : 'TabSeparated', body, settings });
  }
  const h = monitorEventLoopDelay({ resolution: 10 });
  h.enable();
  const t1 = performance.now();
  await run();
  const insertMs = performance.now() - t1;
  h.disable();
  return { encodeMs, insertMs, bytes, maxDelayMs: h.max / 1e6 };
}

/**
 * Runs every format at every size on a fresh embedded engine: 20–60 s with the defaults on a
 * 2-core machine, depending on load.
 */
export async function benchInserts(options: InsertBenchOptions = {}): Promise<InsertBenchRow[]> {
  const sizes = options.sizes ?? [10_000, 100_000];
  const repeats = options.repeats ?? 2;
  const dir = await mkdtemp(join(tmpdir(), 'towerwatch-insert-bench-'));
  const out: InsertBenchRow[] = [];
  try {
    await using ch = await openClickHouse({ clickhouseUrl: null, dataDir: dir, database: 'bench' });
    await migrate(ch, { retentionDays: 30 });
    let seq = 1;
    let eventId = 1;
    let expected = 0;
    const next = (size: number): AppUsageRow[] => {
      const rows = makeRows(size, seq, eventId);
      seq += Math.ceil(size / 1000);
      eventId += size;
      expected += size;
      return rows;
    };
    for (const format of FORMATS) await insertOnce(ch, format, next(1000)); // warm-up
    for (const size of sizes) {
      // Round-robin over the formats, so that background merges and machine load fall on all.
      const timings = new Map<InsertBenchFormat, Timed[]>(FORMATS.map((f) => [f, []]));
      const rounds = size <= 10_000 ? repeats * 2 : repeats;
      for (let k = 0; k < rounds; k++) {
        for (const format of FORMATS) timings.get(format)?.push(await insertOnce(ch, format, next(size)));
      }
      for (const format of FORMATS) {
        const list = timings.get(format) ?? [];
        const mean = (f: (t: Timed) => number) => list.reduce((sum, t) => sum + f(t), 0) / list.length;
        const encodeMs = mean((t) => t.encodeMs);
        const insertMs = mean((t) => t.insertMs);
        const bytes = list[0]?.bytes ?? null;
        out.push({
          format,
          rows_per_insert: size,
          inserts: list.length,
          rows_per_s: round(size / ((encodeMs + insertMs) / 1000)),
          insert_rows_per_s: round(size / (insertMs / 1000)),
          encode_ms: round(encodeMs, 1),
          insert_ms: round(insertMs, 1),
          bytes_per_row: bytes === null ? null : round(bytes / size, 1),
          max_loop_delay_ms: round(Math.max(...list.map((t) => t.maxDelayMs)), 1),
        });
      }
    }
    const stored = await (await ch.client.query({ query: 'SELECT count() AS n FROM bench.app_usage', format: 'JSONEachRow' })).json<{ n: number | string }>();
    if (Number(stored[0]?.n) !== expected) {
      throw new Error(`insert bench stored ${String(stored[0]?.n)} rows, expected ${expected}`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return out;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const started = performance.now();
  const rows = await benchInserts();
  console.log('\ninserts into app_usage (embedded chdb, two materialized views attached)');
  console.table(rows);
  console.log(`total ${round((performance.now() - started) / 1000, 1)} s`);
  console.log(`results written to ${await writeResults('insert', { inserts: rows })}`);
}

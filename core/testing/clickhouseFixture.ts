/**
 * Test helper: one embedded ClickHouse data directory per test file (libchdb binds one per
 * process), a database per test, closed and deleted after the file's tests.
 *
 * ```ts
 * const clickhouse = withClickHouse('towerwatch-schema-'); // top level: registers after()
 * test('…', async () => { const h = await clickhouse.open('my_test'); … });
 * ```
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { type AppUsageRow, type ClickHouseHandle, migrate, type MigrateOptions, openClickHouse } from '../clickhouse/index.js';

export interface ClickHouseFixture {
  /** A handle on `database` (created if missing) in the file's data directory. */
  open(database: string): Promise<ClickHouseHandle>;
}

export function withClickHouse(prefix: string): ClickHouseFixture {
  // Made on first use, not in a before() hook: node:test (Node 20) runs a file's top-level
  // before() hooks at once, so the file's own before() could open a handle ahead of ours.
  let dir: Promise<string> | undefined;
  const handles: ClickHouseHandle[] = [];
  after(async () => {
    for (const h of handles) await h.close();
    if (dir !== undefined) await rm(await dir, { recursive: true, force: true });
  });
  return {
    async open(database) {
      dir ??= mkdtemp(join(tmpdir(), prefix));
      const h = await openClickHouse({ clickhouseUrl: null, dataDir: await dir, database });
      handles.push(h);
      return h;
    },
  };
}

/**
 * An embedded ClickHouse, migrated, in a new temporary directory named from `prefix`: for a test
 * that runs more than queries in it (a pipeline, a worker). The caller closes `ch` and removes `dataDir`.
 */
export async function openTempClickHouse(prefix: string, options: MigrateOptions): Promise<{ dataDir: string; ch: ClickHouseHandle }> {
  const dataDir = await mkdtemp(join(tmpdir(), prefix));
  let ch: ClickHouseHandle | undefined;
  try {
    ch = await openClickHouse({ clickhouseUrl: null, dataDir });
    await migrate(ch, options);
    return { dataDir, ch };
  } catch (err) {
    await ch?.close();
    await rm(dataDir, { recursive: true, force: true });
    throw err;
  }
}

export async function rows<T>(h: ClickHouseHandle, query: string, query_params?: Record<string, unknown>): Promise<T[]> {
  return (await h.client.query({ query, format: 'JSONEachRow', ...(query_params ? { query_params } : {}) })).json<T>();
}

/** Runs a query that must be answered from a projection (ClickHouse refuses it otherwise). */
export async function projected<T>(h: ClickHouseHandle, query: string): Promise<T[]> {
  return (await h.client.query({ query, format: 'JSONEachRow', clickhouse_settings: { force_optimize_projection: 1 } })).json<T>();
}

/** What ClickHouseSink pins for TSV inserts (core/clickhouse/tsv.ts says why). */
export const INSERT_SETTINGS = { date_time_input_format: 'basic' } as const;

/**
 * A recent timestamp (10.123 s into a minute, three hours ago): rows older than the retention
 * TTL would be dropped as they are inserted.
 */
export const RECENT_TS = Math.floor((Date.now() - 3 * 3_600_000) / 60_000) * 60_000 + 10_123;

/** An app_usage row at {@link RECENT_TS}, with `over` applied. */
export function usageRow(over: Partial<AppUsageRow> = {}): AppUsageRow {
  return {
    enterprise_id: 'acme',
    ts: RECENT_TS,
    carrier: 'att',
    tower_id: 'nyc-001',
    event_id: 1,
    stream_seq: 10,
    device_id: 'dev-1',
    user_id: 'u-1',
    user_name: 'Ada',
    app_id: 'tiktok',
    app_name: 'TikTok',
    app_category: 'social',
    action_id: 'upload',
    action_name: 'Upload',
    bytes_up: 100,
    bytes_down: 1000,
    verdict: 'allow',
    policy_id: 'p-1',
    policy_name: 'Default',
    rule_id: '',
    severity: '',
    remediation: '',
    policy_version: 'v1',
    role_ids: 'r-eng',
    region: 'us-east',
    os: 'iOS',
    os_version: '17.2',
    decision_inputs: 1,
    shadow_verdict: '',
    shadow_policy_id: '',
    shadow_rule_id: '',
    ...over,
  };
}

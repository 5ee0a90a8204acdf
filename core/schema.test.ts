import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { openClickHouse, type ClickHouseHandle } from './clickhouse.js';
import {
  APP_USAGE_COLUMNS,
  APP_USAGE_TSV_TYPES,
  currentTtlDays,
  DEAD_LETTER_COLUMNS,
  migrate,
  MIGRATIONS,
  PER_MINUTE,
  queryDeviceLastSeen,
  SCHEMA_VERSION,
  TTL_COLUMNS,
  VIOLATIONS_COLUMNS,
  writeAppUsageRow,
  writeDeadLetterRow,
  writeViolationRow,
  type AppUsageRow,
  type ViolationRow,
} from './schema.js';
import { encodeTsv, TsvWriter } from './tsv.js';

// One embedded data directory per test process; each test uses its own database.
// 64-bit integers are read as strings (toString) or cast to 32 bits: JSON output quotes them
// on some servers and not on others (chdb 3.4's default is unquoted).
let dir: string;
const handles: ClickHouseHandle[] = [];
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'towerwatch-schema-'));
});
after(async () => {
  for (const h of handles) await h.close();
  await rm(dir, { recursive: true, force: true });
});

async function open(database: string): Promise<ClickHouseHandle> {
  const h = await openClickHouse({ clickhouseUrl: null, dataDir: dir, database });
  handles.push(h);
  return h;
}

async function rows<T>(h: ClickHouseHandle, query: string, query_params?: Record<string, unknown>): Promise<T[]> {
  return (await h.client.query({ query, format: 'JSONEachRow', ...(query_params ? { query_params } : {}) })).json<T>();
}

/** Runs a query that must be answered from a projection (ClickHouse refuses it otherwise). */
async function projected<T>(h: ClickHouseHandle, query: string): Promise<T[]> {
  return (await h.client.query({ query, format: 'JSONEachRow', clickhouse_settings: { force_optimize_projection: 1 } })).json<T>();
}

const INSERT_SETTINGS = { date_time_input_format: 'basic' } as const;
// Recent timestamps (10.123 s into a minute, three hours ago): rows older than the retention
// TTL would be dropped as they are inserted.
const T0 = Math.floor((Date.now() - 3 * 3_600_000) / 60_000) * 60_000 + 10_123;

function usage(over: Partial<AppUsageRow> = {}): AppUsageRow {
  return {
    enterprise_id: 'acme',
    ts: T0,
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
    ...over,
  };
}

/** The database as a towerwatch of schema `version` left it (migrations up to it, recorded). */
async function migrateUpTo(h: ClickHouseHandle, version: number): Promise<void> {
  await h.client.command({
    query: `CREATE TABLE ${h.database}.schema_migrations (version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version`,
  });
  for (const m of MIGRATIONS.filter((x) => x.version <= version)) {
    for (const statement of m.statements({ db: h.database, retentionDays: 30 })) await h.client.command({ query: statement });
    await h.client.insert({ table: `${h.database}.schema_migrations`, values: [{ version: m.version, name: m.name }], format: 'JSONEachRow' });
  }
}

test('migrate creates every table and projection, and a second run is a no-op', async () => {
  const h = await open('schema_idem');
  const first = await migrate(h, { retentionDays: 30 });
  assert.deepEqual(first.applied, [1, 2, 3, 4, 5, 6]);
  assert.equal(SCHEMA_VERSION, 6);
  // The tables were created with the TTL already right.
  assert.deepEqual(first.ttlChanged, []);
  const second = await migrate(h, { retentionDays: 30 });
  assert.deepEqual(second, { applied: [], ttlChanged: [] });

  const tables = await rows<{ name: string; engine: string }>(
    h,
    'SELECT name, engine FROM system.tables WHERE database = {db:String} ORDER BY name',
    { db: h.database },
  );
  assert.deepEqual(Object.fromEntries(tables.map((t) => [t.name, t.engine])), {
    app_usage: 'MergeTree',
    dead_letters: 'MergeTree',
    discovery_sightings: 'MergeTree',
    remedial_actions: 'MergeTree',
    schema_migrations: 'ReplacingMergeTree',
    violations: 'MergeTree',
  });
  const projections = await rows<{ table: string; name: string }>(
    h,
    'SELECT table, name FROM system.projections WHERE database = {db:String} ORDER BY table, name',
    { db: h.database },
  );
  assert.deepEqual(projections, [
    { table: 'app_usage', name: 'device_days' },
    { table: 'app_usage', name: 'per_minute' },
    { table: 'violations', name: 'per_minute' },
  ]);
  const versions = await rows<{ version: number }>(h, `SELECT version FROM ${h.database}.schema_migrations ORDER BY version`);
  assert.deepEqual(versions.map((v) => v.version), [1, 2, 3, 4, 5, 6]);
});

test('columns, types, keys and settings are as specified', async () => {
  const h = await open('schema_cols');
  await migrate(h, { retentionDays: 30 });
  const cols = async (table: string) =>
    rows<{ name: string; type: string; default_expression: string }>(
      h,
      'SELECT name, type, default_expression FROM system.columns WHERE database = {db:String} AND table = {t:String} ORDER BY position',
      { db: h.database, t: table },
    );
  const LC = 'LowCardinality(String)';
  const DT = "DateTime64(3, 'UTC')";
  const appUsage = await cols('app_usage');
  assert.deepEqual(
    appUsage.map((c) => c.name),
    [...APP_USAGE_COLUMNS, 'ingested_at'],
  );
  assert.deepEqual(Object.fromEntries(appUsage.map((c) => [c.name, c.type])), {
    enterprise_id: LC, ts: DT, carrier: LC, tower_id: LC, event_id: 'UInt64', stream_seq: 'UInt64',
    device_id: 'String', user_id: 'String', user_name: 'String', app_id: LC, app_name: LC, app_category: LC,
    action_id: LC, action_name: LC, bytes_up: 'UInt64', bytes_down: 'UInt64',
    verdict: "Enum8('allow' = 1, 'deny' = 2, 'unregistered' = 3)", policy_id: 'String', policy_name: 'String',
    rule_id: 'String', severity: LC, remediation: LC, policy_version: LC, ingested_at: DT,
  });
  assert.equal(appUsage.at(-1)?.default_expression, 'now64(3)');
  const violations = await cols('violations');
  assert.deepEqual(violations.map((c) => c.name), [...VIOLATIONS_COLUMNS, 'ingested_at']);
  assert.equal(violations.find((c) => c.name === 'tower_location')?.type, 'String');
  assert.equal(violations.find((c) => c.name === 'region')?.type, LC);
  const deadLetters = await cols('dead_letters');
  assert.deepEqual(deadLetters.map((c) => c.name), [...DEAD_LETTER_COLUMNS]);
  assert.deepEqual(Object.fromEntries(deadLetters.map((c) => [c.name, c.type])), {
    ts: DT, stream: LC, subject: 'String', stream_seq: 'UInt64', code: LC, message: 'String',
    event_index: 'Int32', payload_base64: 'String', rejected_count: 'UInt32', rejections: 'String', payload_bytes: 'UInt32', payload_truncated: 'Bool',
  });

  const meta = await rows<{ name: string; partition_key: string; sorting_key: string; create_table_query: string }>(
    h,
    'SELECT name, partition_key, sorting_key, create_table_query FROM system.tables WHERE database = {db:String} AND engine LIKE {e:String}',
    { db: h.database, e: '%MergeTree' },
  );
  const byName = new Map(meta.map((m) => [m.name, m]));
  assert.equal(byName.get('app_usage')?.sorting_key, 'enterprise_id, ts, tower_id, event_id');
  assert.equal(byName.get('app_usage')?.partition_key, 'toDate(ts)');
  assert.equal(byName.get('violations')?.sorting_key, 'enterprise_id, ts, tower_id, event_id');
  for (const m of meta) {
    if (m.name === 'schema_migrations') continue;
    assert.match(m.create_table_query, /non_replicated_deduplication_window = 1000/, m.name);
  }
  const indexes = await rows<{ table: string; name: string }>(
    h,
    'SELECT table, name FROM system.data_skipping_indices WHERE database = {db:String} ORDER BY table, name',
    { db: h.database },
  );
  assert.deepEqual(indexes.map((i) => `${i.table}.${i.name}`), [
    'app_usage.idx_device_id', 'app_usage.idx_stream_seq', 'app_usage.idx_user_id',
    'dead_letters.idx_stream_seq',
    'discovery_sightings.idx_stream_seq',
    'remedial_actions.idx_action_id',
    'violations.idx_alert_id', 'violations.idx_device_id', 'violations.idx_stream_seq', 'violations.idx_user_id',
  ]);
});

test('TTL follows retentionDays, changed only when it differs', async () => {
  const h = await open('schema_ttl');
  await migrate(h, { retentionDays: 30 });
  const tables = Object.keys(TTL_COLUMNS).sort();
  assert.deepEqual([...(await currentTtlDays(h))].sort(), tables.map((t) => [t, 30]));
  const lines: string[] = [];
  const changed = await migrate(h, { retentionDays: 7, log: (l) => lines.push(l) });
  assert.deepEqual(changed.applied, []);
  assert.deepEqual([...changed.ttlChanged].sort(), tables);
  assert.equal(lines.length, tables.length);
  assert.deepEqual([...(await currentTtlDays(h))].sort(), tables.map((t) => [t, 7]));
  assert.deepEqual(await migrate(h, { retentionDays: 7 }), { applied: [], ttlChanged: [] });
  await assert.rejects(migrate(h, { retentionDays: 0 }), /retentionDays must be an integer/);
});

test('upgrading from schema 2 builds the projections for rows stored before and drops the views', async () => {
  const h = await open('schema_upgrade');
  await migrateUpTo(h, 2);
  const w = new TsvWriter();
  for (let i = 0; i < 5; i++) writeAppUsageRow(w, usage({ event_id: i, ts: T0 + i * 60_000 }));
  await h.insertFormatted({ table: 'app_usage', columns: APP_USAGE_COLUMNS, format: 'TabSeparated', body: w.finish(), settings: INSERT_SETTINGS });

  assert.deepEqual((await migrate(h, { retentionDays: 30 })).applied, [3, 4, 5, 6]);
  const deadline = Date.now() + 20_000;
  const built = async (): Promise<number> =>
    Number(
      (await rows<{ n: string }>(h, `SELECT count() AS n FROM system.projection_parts WHERE database = {db:String} AND table = 'app_usage' AND active`, { db: h.database }))[0]?.n,
    );
  while ((await built()) < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.equal(await built(), 2, 'per_minute and device_days built for the part written at schema 2');
  const perMinute = await projected<{ n: number }>(
    h,
    `SELECT toUInt32(count()) AS n FROM ${h.database}.app_usage WHERE enterprise_id = 'acme' GROUP BY ${PER_MINUTE.minute} ORDER BY ${PER_MINUTE.minute}`,
  );
  assert.deepEqual(perMinute, [{ n: 1 }, { n: 1 }, { n: 1 }, { n: 1 }, { n: 1 }]);
  const left = await rows<{ name: string }>(h, `SELECT name FROM system.tables WHERE database = {db:String} AND name LIKE '%per_minute%' OR name LIKE 'device_sightings%'`, { db: h.database });
  assert.deepEqual(left, []);
});

test('a database migrated by a newer towerwatch is refused', async () => {
  const h = await open('schema_newer');
  await migrate(h, { retentionDays: 30 });
  await h.client.insert({ table: `${h.database}.schema_migrations`, values: [{ version: 99, name: 'future' }], format: 'JSONEachRow' });
  await assert.rejects(migrate(h, { retentionDays: 30 }), /schema version 99, newer than this towerwatch knows \(6\)/);
});

test('upgrading to schema 6 keeps the per-rejection dead letters of before, each counted once, and adds one-row-per-message columns', async () => {
  const h = await open('schema_dl6');
  await migrateUpTo(h, 5);
  await h.client.insert({
    table: `${h.database}.dead_letters`,
    values: [0, 3].map((i) => ({ ts: T0, stream: 'USAGE', subject: 'usage.att.t1', stream_seq: 9, code: 'bad_field', message: 'x', event_index: i, payload_base64: 'AAEC' })),
    format: 'JSONEachRow',
  });
  assert.deepEqual((await migrate(h, { retentionDays: 30 })).applied, [6]);
  assert.deepEqual(
    await rows(h, `SELECT event_index, rejected_count, rejections, payload_bytes, payload_truncated FROM ${h.database}.dead_letters ORDER BY event_index`),
    [
      { event_index: 0, rejected_count: 1, rejections: '', payload_bytes: 3, payload_truncated: false },
      { event_index: 3, rejected_count: 1, rejections: '', payload_bytes: 3, payload_truncated: false },
    ],
  );
});

test('the per-minute and device projections answer the rollup queries (and are used: forced)', async () => {
  const h = await open('schema_mv');
  await migrate(h, { retentionDays: 30 });
  const t0 = T0;
  const w = new TsvWriter();
  writeAppUsageRow(w, usage({ event_id: 1, ts: t0 }));
  writeAppUsageRow(w, usage({ event_id: 2, ts: t0 + 20_000, bytes_up: 5, bytes_down: 7 })); // same minute
  writeAppUsageRow(w, usage({ event_id: 3, ts: t0 + 60_000, tower_id: 'nyc-002', verdict: 'deny', severity: 'high' }));
  writeAppUsageRow(w, usage({ event_id: 4, ts: t0 - 86_400_000, device_id: 'dev-2', tower_id: 'bos-001' })); // a day earlier
  writeAppUsageRow(w, usage({ event_id: 5, ts: t0 + 120_000, enterprise_id: '', device_id: 'stranger', verdict: 'unregistered', user_id: '', user_name: '', policy_id: '', policy_name: '', policy_version: 'none' }));
  await h.insertFormatted({ table: 'app_usage', columns: APP_USAGE_COLUMNS, format: 'TabSeparated', body: w.finish(), settings: INSERT_SETTINGS });

  const perMinute = await projected<Record<string, unknown>>(
    h,
    `SELECT enterprise_id, toString(toUnixTimestamp(${PER_MINUTE.minute}) * 1000) AS minute_ms, tower_id, app_id, app_name, verdict,
            toUInt32(count()) AS events, toUInt32(sum(bytes_up)) AS up, toUInt32(sum(bytes_down)) AS down
     FROM ${h.database}.app_usage
     WHERE enterprise_id = 'acme' AND ${PER_MINUTE.minute} >= toDateTime(0)
     GROUP BY enterprise_id, ${PER_MINUTE.minute}, tower_id, app_id, app_name, verdict ORDER BY minute_ms`,
  );
  // A query on ts itself cannot be answered from the projection: forcing it says so.
  await assert.rejects(
    projected(h, `SELECT count() FROM ${h.database}.app_usage WHERE ts >= toDateTime64(0, 3) GROUP BY tower_id`),
    /PROJECTION_NOT_USED|projection/i,
  );
  const minute = t0 - (t0 % 60_000);
  assert.deepEqual(perMinute, [
    { enterprise_id: 'acme', minute_ms: String(minute - 86_400_000), tower_id: 'bos-001', app_id: 'tiktok', app_name: 'TikTok', verdict: 'allow', events: 1, up: 100, down: 1000 },
    { enterprise_id: 'acme', minute_ms: String(minute), tower_id: 'nyc-001', app_id: 'tiktok', app_name: 'TikTok', verdict: 'allow', events: 2, up: 105, down: 1007 },
    { enterprise_id: 'acme', minute_ms: String(minute + 60_000), tower_id: 'nyc-002', app_id: 'tiktok', app_name: 'TikTok', verdict: 'deny', events: 1, up: 100, down: 1000 },
  ]);

  const seen = await queryDeviceLastSeen(h, { enterpriseId: 'acme' });
  assert.deepEqual(seen, [
    { enterprise_id: 'acme', device_id: 'dev-1', first_seen_ms: t0, last_seen_ms: t0 + 60_000, last_tower_id: 'nyc-002', last_carrier: 'att', events: 3 },
    { enterprise_id: 'acme', device_id: 'dev-2', first_seen_ms: t0 - 86_400_000, last_seen_ms: t0 - 86_400_000, last_tower_id: 'bos-001', last_carrier: 'att', events: 1 },
  ]);
  // A later insert moves the last sighting; filters by device and day.
  const w2 = new TsvWriter();
  writeAppUsageRow(w2, usage({ event_id: 6, ts: t0 + 3_600_000, tower_id: 'nyc-009', carrier: 'tmo' }));
  await h.insertFormatted({ table: 'app_usage', columns: APP_USAGE_COLUMNS, format: 'TabSeparated', body: w2.finish(), settings: INSERT_SETTINGS });
  assert.deepEqual(await queryDeviceLastSeen(h, { enterpriseId: 'acme', deviceIds: ['dev-1'] }), [
    { enterprise_id: 'acme', device_id: 'dev-1', first_seen_ms: t0, last_seen_ms: t0 + 3_600_000, last_tower_id: 'nyc-009', last_carrier: 'tmo', events: 4 },
  ]);
  assert.deepEqual((await queryDeviceLastSeen(h, { enterpriseId: 'acme', sinceMs: t0 })).map((d) => d.device_id), ['dev-1']);
  assert.deepEqual((await queryDeviceLastSeen(h, { enterpriseId: '' })).map((d) => d.device_id), ['stranger']);
  assert.equal((await queryDeviceLastSeen(h)).length, 3);
  assert.equal((await queryDeviceLastSeen(h, { limit: 1 }))[0]?.device_id, 'dev-1');

  const v: ViolationRow = {
    alert_id: 'att:nyc-002:3', enterprise_id: 'acme', ts: t0 + 60_000, carrier: 'att', tower_id: 'nyc-002',
    tower_location: 'New York City', region: 'us-east', event_id: 3, stream_seq: 10, device_id: 'dev-1', user_id: 'u-1',
    user_name: 'Ada', app_id: 'tiktok', app_name: 'TikTok', action_id: 'upload', action_name: 'Upload', policy_id: 'p-1',
    policy_name: 'Default', rule_id: 'r-1', severity: 'high', remediation: 'block_app', policy_version: 'v1',
  };
  const wv = new TsvWriter();
  writeViolationRow(wv, v);
  writeViolationRow(wv, { ...v, alert_id: 'att:nyc-002:4', event_id: 4, ts: v.ts + 1000 });
  await h.insertFormatted({ table: 'violations', columns: VIOLATIONS_COLUMNS, format: 'TabSeparated', body: wv.finish(), settings: INSERT_SETTINGS });
  assert.deepEqual(
    await projected(h, `SELECT tower_id, app_id, user_id, user_name, policy_id, severity, toUInt32(count()) AS n
      FROM ${h.database}.violations WHERE enterprise_id = 'acme'
      GROUP BY tower_id, app_id, user_id, user_name, policy_id, severity`),
    [{ tower_id: 'nyc-002', app_id: 'tiktok', user_id: 'u-1', user_name: 'Ada', policy_id: 'p-1', severity: 'high', n: 2 }],
  );
  assert.deepEqual(
    await rows(h, `SELECT alert_id, toString(toUnixTimestamp64Milli(ts)) AS ms, remediation FROM ${h.database}.violations ORDER BY ts`),
    [
      { alert_id: 'att:nyc-002:3', ms: String(v.ts), remediation: 'block_app' },
      { alert_id: 'att:nyc-002:4', ms: String(v.ts + 1000), remediation: 'block_app' },
    ],
  );
});

test('row writers agree with encodeTsv over the column types', () => {
  const row = usage({ user_name: 'tab\there', ts: 1_764_000_000_007 });
  const w = new TsvWriter();
  writeAppUsageRow(w, row);
  assert.deepEqual(w.finish(), encodeTsv([APP_USAGE_COLUMNS.map((c) => row[c])], APP_USAGE_TSV_TYPES));
  const wd = new TsvWriter();
  writeDeadLetterRow(wd, { ts: 5, stream: 'USAGE', subject: 'usage.att.t1', stream_seq: 3, code: 'bad_frame', message: 'x', event_index: -1, payload_base64: 'AA==', rejected_count: 1, rejections: '[]', payload_bytes: 1, payload_truncated: false });
  assert.equal(wd.finish().toString(), '0.005\tUSAGE\tusage.att.t1\t3\tbad_frame\tx\t-1\tAA==\t1\t[]\t1\t0\n');
});

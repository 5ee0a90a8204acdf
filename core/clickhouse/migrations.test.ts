/** The schema's migrations (core/clickhouse/migrations.ts) on the embedded engine. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ClickHouseHandle } from './open.js';
import { projected, RECENT_TS, rows, usageRow, withClickHouse } from '../testing/clickhouseFixture.js';
import { currentTtlDays, migrate } from './migrate.js';
import { MIGRATIONS, PER_HOUR, PER_MINUTE, SCHEMA_VERSION, TTL_COLUMNS } from './migrations.js';
import { APP_USAGE, DEAD_LETTERS, VIOLATIONS } from './rows.js';

// One embedded data directory per test process; each test uses its own database.
// 64-bit integers are read as strings (toString) or cast to 32 bits: JSON output quotes them
// on some servers and not on others (chdb 3.4's default is unquoted).
const clickhouse = withClickHouse('towerwatch-schema-');

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
  const h = await clickhouse.open('schema_idem');
  const first = await migrate(h, { retentionDays: 30 });
  assert.deepEqual(first.applied, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  assert.equal(SCHEMA_VERSION, 11);
  // The tables were created with the TTL already right.
  assert.deepEqual(first.ttlChanged, []);
  const second = await migrate(h, { retentionDays: 30 });
  assert.deepEqual(second, { applied: [], ttlChanged: [] });

  const tables = await rows<{ name: string; engine: string }>(h, 'SELECT name, engine FROM system.tables WHERE database = {db:String} ORDER BY name', {
    db: h.database,
  });
  assert.deepEqual(Object.fromEntries(tables.map((t) => [t.name, t.engine])), {
    app_usage: 'MergeTree',
    dead_letters: 'MergeTree',
    discovery_sightings: 'MergeTree',
    policy_versions: 'ReplacingMergeTree',
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
    { table: 'app_usage', name: 'per_hour' },
    { table: 'app_usage', name: 'per_minute' },
    { table: 'violations', name: 'per_hour' },
    { table: 'violations', name: 'per_minute' },
  ]);
  const versions = await rows<{ version: number }>(h, `SELECT version FROM ${h.database}.schema_migrations ORDER BY version`);
  assert.deepEqual(
    versions.map((v) => v.version),
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
  );
});

test('columns, types, keys and settings are as specified', async () => {
  const h = await clickhouse.open('schema_cols');
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
    [...APP_USAGE.columns, 'ingested_at'],
  );
  assert.deepEqual(Object.fromEntries(appUsage.map((c) => [c.name, c.type])), {
    enterprise_id: LC,
    ts: DT,
    carrier: LC,
    tower_id: LC,
    event_id: 'UInt64',
    stream_seq: 'UInt64',
    device_id: 'String',
    user_id: 'String',
    user_name: 'String',
    app_id: LC,
    app_name: LC,
    app_category: LC,
    action_id: LC,
    action_name: LC,
    bytes_up: 'UInt64',
    bytes_down: 'UInt64',
    verdict: "Enum8('allow' = 1, 'deny' = 2, 'unregistered' = 3)",
    policy_id: 'String',
    policy_name: 'String',
    rule_id: 'String',
    severity: LC,
    remediation: LC,
    policy_version: LC,
    role_ids: LC,
    region: LC,
    os: LC,
    os_version: LC,
    decision_inputs: 'UInt8',
    shadow_verdict: LC,
    shadow_policy_id: 'String',
    shadow_rule_id: 'String',
    ingested_at: DT,
  });
  assert.equal(appUsage.at(-1)?.default_expression, 'now64(3)');
  const violations = await cols('violations');
  assert.deepEqual(
    violations.map((c) => c.name),
    [...VIOLATIONS.columns, 'ingested_at'],
  );
  assert.equal(violations.find((c) => c.name === 'tower_location')?.type, 'String');
  assert.equal(violations.find((c) => c.name === 'region')?.type, LC);
  const deadLetters = await cols('dead_letters');
  assert.deepEqual(
    deadLetters.map((c) => c.name),
    [...DEAD_LETTERS.columns],
  );
  assert.deepEqual(Object.fromEntries(deadLetters.map((c) => [c.name, c.type])), {
    ts: DT,
    stream: LC,
    subject: 'String',
    stream_seq: 'UInt64',
    code: LC,
    message: 'String',
    event_index: 'Int32',
    payload_base64: 'String',
    rejected_count: 'UInt32',
    rejections: 'String',
    payload_bytes: 'UInt32',
    payload_truncated: 'Bool',
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
  assert.deepEqual(
    indexes.map((i) => `${i.table}.${i.name}`),
    [
      'app_usage.idx_device_id',
      'app_usage.idx_stream_seq',
      'app_usage.idx_user_id',
      'dead_letters.idx_stream_seq',
      'discovery_sightings.idx_stream_seq',
      'remedial_actions.idx_action_id',
      'violations.idx_alert_id',
      'violations.idx_device_id',
      'violations.idx_stream_seq',
      'violations.idx_user_id',
    ],
  );
});

test('TTL follows retentionDays, changed only when it differs', async () => {
  const h = await clickhouse.open('schema_ttl');
  await migrate(h, { retentionDays: 30 });
  const tables = Object.keys(TTL_COLUMNS).sort();
  assert.deepEqual(
    [...(await currentTtlDays(h))].sort(),
    tables.map((t) => [t, 30]),
  );
  const lines: string[] = [];
  const changed = await migrate(h, { retentionDays: 7, log: (l) => lines.push(l) });
  assert.deepEqual(changed.applied, []);
  assert.deepEqual([...changed.ttlChanged].sort(), tables);
  assert.equal(lines.length, tables.length);
  assert.deepEqual(
    [...(await currentTtlDays(h))].sort(),
    tables.map((t) => [t, 7]),
  );
  assert.deepEqual(await migrate(h, { retentionDays: 7 }), { applied: [], ttlChanged: [] });
  await assert.rejects(migrate(h, { retentionDays: 0 }), /retentionDays must be an integer/);
});

test('upgrading from schema 2 builds the projections for rows stored before and drops the views', async () => {
  const h = await clickhouse.open('schema_upgrade');
  await migrateUpTo(h, 2);
  // Rows as schema 2 had them: without the decision inputs of schema 9.
  const inputs = new Set(['role_ids', 'region', 'os', 'os_version', 'decision_inputs', 'shadow_verdict', 'shadow_policy_id', 'shadow_rule_id']);
  await h.client.insert({
    table: `${h.database}.app_usage`,
    values: Array.from({ length: 5 }, (_, i) => {
      const row: Record<string, unknown> = Object.fromEntries(Object.entries(usageRow({ event_id: i })).filter(([k]) => !inputs.has(k)));
      return { ...row, ts: new Date(RECENT_TS + i * 60_000).toISOString() };
    }),
    format: 'JSONEachRow',
    clickhouse_settings: { date_time_input_format: 'best_effort' },
  });

  assert.deepEqual((await migrate(h, { retentionDays: 30 })).applied, [3, 4, 5, 6, 7, 8, 9, 10, 11]);
  const deadline = Date.now() + 20_000;
  const built = async (): Promise<number> =>
    Number(
      (
        await rows<{ n: string }>(h, `SELECT count() AS n FROM system.projection_parts WHERE database = {db:String} AND table = 'app_usage' AND active`, {
          db: h.database,
        })
      )[0]?.n,
    );
  while ((await built()) < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.equal(await built(), 3, 'per_minute, per_hour and device_days built for the part written at schema 2');
  const perMinute = await projected<{ n: number }>(
    h,
    `SELECT toUInt32(count()) AS n FROM ${h.database}.app_usage WHERE enterprise_id = 'acme' GROUP BY ${PER_MINUTE.minute} ORDER BY ${PER_MINUTE.minute}`,
  );
  assert.deepEqual(perMinute, [{ n: 1 }, { n: 1 }, { n: 1 }, { n: 1 }, { n: 1 }]);
  const perHour = await projected<{ n: number }>(
    h,
    `SELECT toUInt32(count()) AS n FROM ${h.database}.app_usage WHERE enterprise_id = 'acme' GROUP BY enterprise_id, ${PER_HOUR.hour}`,
  );
  assert.equal(
    perHour.reduce((n, r) => n + r.n, 0),
    5,
  );
  const left = await rows<{ name: string }>(
    h,
    `SELECT name FROM system.tables WHERE database = {db:String} AND name LIKE '%per_minute%' OR name LIKE 'device_sightings%'`,
    { db: h.database },
  );
  assert.deepEqual(left, []);
});

test('schema 11: an insert into the hot tables is one compact part, a part past 64 MiB is wide', async () => {
  const h = await clickhouse.open('schema_compact');
  await migrateUpTo(h, 10);
  assert.deepEqual((await migrate(h, { retentionDays: 30 })).applied, [11]);
  const body = APP_USAGE.encodeNative(Array.from({ length: 2000 }, (_, i) => APP_USAGE.values(usageRow({ event_id: i, ts: RECENT_TS + i }))));
  await h.insertFormatted({ table: 'app_usage', columns: APP_USAGE.columns, format: 'Native', body });
  const violation = VIOLATIONS.types.map((type) => (type === 'datetime64ms' ? RECENT_TS : type === 'uint' ? 1 : 'v')) as Parameters<typeof VIOLATIONS.write>[1];
  await h.insertFormatted({ table: 'violations', columns: VIOLATIONS.columns, format: 'Native', body: VIOLATIONS.encodeNative([violation]) });
  const parts = (table: string): Promise<Array<{ part_type: string; rows: string }>> =>
    rows(h, 'SELECT part_type, toString(rows) AS rows FROM system.parts WHERE database = {db:String} AND table = {t:String} AND active', {
      db: h.database,
      t: table,
    });
  assert.deepEqual(await parts('app_usage'), [{ part_type: 'Compact', rows: '2000' }]);
  assert.deepEqual(await parts('violations'), [{ part_type: 'Compact', rows: '1' }]);
  // 64 MiB of one String column (each value unique, little to compress) makes a wide part.
  await h.client.command({
    query: `INSERT INTO ${h.database}.app_usage (enterprise_id, ts, event_id, device_id) SELECT 'big', now64(3), number, repeat(toString(number), 40) FROM numbers(1000000)`,
  });
  const big = await rows<{ part_type: string }>(
    h,
    "SELECT part_type FROM system.parts WHERE database = {db:String} AND table = 'app_usage' AND active AND rows = 1000000",
    { db: h.database },
  );
  assert.deepEqual(big, [{ part_type: 'Wide' }]);
});

test('a database migrated by a newer towerwatch is refused', async () => {
  const h = await clickhouse.open('schema_newer');
  await migrate(h, { retentionDays: 30 });
  await h.client.insert({ table: `${h.database}.schema_migrations`, values: [{ version: 99, name: 'future' }], format: 'JSONEachRow' });
  await assert.rejects(migrate(h, { retentionDays: 30 }), /schema version 99, newer than this towerwatch knows \(11\)/);
});

test('upgrading to schema 6 keeps the per-rejection dead letters of before, each counted once, and adds one-row-per-message columns', async () => {
  const h = await clickhouse.open('schema_dl6');
  await migrateUpTo(h, 5);
  await h.client.insert({
    table: `${h.database}.dead_letters`,
    values: [0, 3].map((i) => ({
      ts: RECENT_TS,
      stream: 'USAGE',
      subject: 'usage.att.t1',
      stream_seq: 9,
      code: 'bad_field',
      message: 'x',
      event_index: i,
      payload_base64: 'AAEC',
    })),
    format: 'JSONEachRow',
  });
  assert.deepEqual((await migrate(h, { retentionDays: 30 })).applied, [6, 7, 8, 9, 10, 11]);
  assert.deepEqual(
    await rows(h, `SELECT event_index, rejected_count, rejections, payload_bytes, payload_truncated FROM ${h.database}.dead_letters ORDER BY event_index`),
    [
      { event_index: 0, rejected_count: 1, rejections: '', payload_bytes: 3, payload_truncated: false },
      { event_index: 3, rejected_count: 1, rejections: '', payload_bytes: 3, payload_truncated: false },
    ],
  );
});

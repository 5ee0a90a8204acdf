/**
 * The cluster mode of the schema (clusterDdl.ts, migrate.ts, tables.ts) on the embedded engine
 * made a one-shard cluster of itself by the ClickHouse stand-in (`cluster`): inserts through
 * `*_all` with insert tokens land once, the dashboard's projections answer through it, a handle
 * opened with `cluster` writes and reads there, and `migrate` on a cluster checks the cluster,
 * sends no DDL to a current schema and turns a refusal into a clear error. ON CLUSTER and the
 * Replicated engines need Keeper and are only parsed (clusterDdl.test.ts).
 * A file of its own: the engine binds one data directory per process.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { RECENT_TS, usageRow } from '../testing/clickhouseFixture.js';
import { projectionTotalQuery } from '../testing/rollups.js';
import { type ClickHouseStandIn, startClickHouseStandIn } from '../testing/clickhouseStandIn.js';
import { DISTRIBUTED_TABLES } from './clusterDdl.js';
import { migrate } from './migrate.js';
import { ClickHouseOpenError, openClickHouse, type ClickHouseHandle } from './open.js';
import { queryStoredSeqsIn } from './queries.js';
import { APP_USAGE } from './rows.js';
import { TsvWriter } from './tsv.js';

const DB = 'towerwatch';
let dir: string;
let standIn: ClickHouseStandIn;
let clustered: ClickHouseHandle;
const json = async <T>(query: string, ch: ClickHouseHandle = standIn.engine): Promise<T[]> =>
  (await ch.client.query({ query, format: 'JSONEachRow' })).json<T>();

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'towerwatch-distributed-'));
  standIn = await startClickHouseStandIn({ dataDir: dir, cluster: 'tw' });
  clustered = await openClickHouse({ clickhouseUrl: standIn.url, dataDir: dir, cluster: 'tw' });
});
after(async () => {
  await clustered?.close();
  await standIn?.close();
  await rm(dir, { recursive: true, force: true });
});

test('a one-shard cluster of the engine itself, and a *_all table over each data table', async () => {
  assert.deepEqual(await json<{ cluster: string; is_local: number }>("SELECT cluster, is_local FROM system.clusters WHERE cluster = 'tw'"), [
    { cluster: 'tw', is_local: 1 },
  ]);
  const tables = await json<{ name: string; engine: string }>(
    `SELECT name, engine FROM system.tables WHERE database = '${DB}' AND name LIKE '%\\_all' ORDER BY name`,
  );
  assert.deepEqual(
    tables,
    Object.keys(DISTRIBUTED_TABLES)
      .sort()
      .map((t) => ({ name: `${t}_all`, engine: 'Distributed' })),
  );
});

test('a handle with cluster inserts through app_usage_all (once per insert token) and reads stored sequences there; the projections answer through it', async () => {
  const w = new TsvWriter();
  for (let i = 0; i < 50; i++)
    APP_USAGE.writeRow(w, usageRow({ event_id: i, stream_seq: i + 1, ts: RECENT_TS + i * 61_000, enterprise_id: i % 2 ? 'acme' : 'globex' }));
  const insert = {
    table: 'app_usage',
    columns: APP_USAGE.columns,
    format: 'TabSeparated' as const,
    body: w.finish(),
    settings: { insert_deduplication_token: 'batch-1', date_time_input_format: 'basic' },
  };
  const before = standIn.requests.length;
  await clustered.insertFormatted(insert);
  await clustered.insertFormatted(insert); // a retried batch: the same token
  const inserts = standIn.requests.slice(before).filter((r) => r.insert !== null);
  assert.deepEqual(
    inserts.map((r) => [r.insert?.table, r.settings['distributed_foreground_insert']]),
    [
      ['app_usage_all', '1'],
      ['app_usage_all', '1'],
    ],
  );
  assert.deepEqual(await json(`SELECT toUInt32(count()) AS n FROM ${DB}.app_usage`), [{ n: 50 }]);
  assert.deepEqual(await json(`SELECT toUInt32(count()) AS n FROM ${DB}.app_usage_all`), [{ n: 50 }]);

  const stored = await queryStoredSeqsIn(clustered, ['app_usage', 'violations', 'dead_letters'], [49, 50, 51]);
  assert.deepEqual([...(stored.get('app_usage') ?? [])].sort(), [49, 50]);
  assert.equal(stored.get('violations')?.size, 0);
  assert.match(
    standIn.requests.at(-1)?.statement ?? '',
    /FROM towerwatch\.app_usage_all WHERE stream_seq IN .* FROM towerwatch\.violations_all .* FROM towerwatch\.dead_letters_all/s,
  );

  // The rollups through *_all, answered from the projections (forced: a miss fails).
  for (const projection of ['per_minute', 'per_hour', 'device_days'] as const) {
    const query = projectionTotalQuery('app_usage', projection, DB).replace(`${DB}.app_usage GROUP`, `${DB}.app_usage_all GROUP`);
    assert.match(query, /app_usage_all/);
    assert.deepEqual(await json(query.replace('sum(c) AS n', 'toUInt32(sum(c)) AS n')), [{ n: 50 }], projection);
  }
});

test('migrate on a cluster: a current schema gets no DDL; an unknown cluster and a refused ON CLUSTER are clear errors', async () => {
  const before = standIn.requests.length;
  assert.deepEqual(await migrate(clustered, { retentionDays: 30 }), { applied: [], ttlChanged: [], distributedMade: false });
  const sent = standIn.requests.slice(before).map((r) => r.statement);
  assert.ok(sent.length > 0 && sent.every((q) => /^\s*SELECT/i.test(q)), sent.join('\n'));

  await using unknown = await openClickHouse({ clickhouseUrl: standIn.url, dataDir: dir, cluster: 'nope' });
  await assert.rejects(migrate(unknown, { retentionDays: 30 }), (err: unknown) => {
    assert.ok(err instanceof ClickHouseOpenError && err.code === 'invalid_options');
    assert.match(err.message, /TOWERWATCH_CLICKHOUSE_CLUSTER is 'nope', which the server .* does not define in remote_servers \(it knows: .*\btw\b/);
    return true;
  });

  // A TTL out of step needs an ALTER ON CLUSTER, which a server without Keeper refuses.
  await assert.rejects(migrate(clustered, { retentionDays: 31 }), (err: unknown) => {
    assert.ok(err instanceof ClickHouseOpenError && err.code === 'open_failed');
    assert.match(err.message, /cluster 'tw' refused the schema's DDL \(ALTER TABLE towerwatch\.app_usage ON CLUSTER 'tw' MODIFY TTL/);
    assert.match(err.message, /need Keeper/);
    return true;
  });

  await assert.rejects(openClickHouse({ clickhouseUrl: null, dataDir: dir, cluster: 'tw' }), /a cluster needs a server URL/);
});

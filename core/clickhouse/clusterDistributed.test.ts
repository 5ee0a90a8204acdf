/**
 * The Distributed layer of the cluster schema (clusterDdl.ts) over the real schema, on the
 * embedded engine given a one-shard cluster whose only replica is itself (a config file with
 * `remote_servers`; `is_local`, so no server is needed): inserts through `*_all` with
 * insert tokens land once, and the dashboard's projections answer queries through it.
 * ON CLUSTER and the Replicated engines need Keeper and are only parsed (clusterDdl.test.ts).
 * A file of its own: the engine binds one data directory per process.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Session } from 'chdb';
import { RECENT_TS, usageRow } from '../testing/clickhouseFixture.js';
import { projectionTotalQuery } from '../testing/rollups.js';
import { DISTRIBUTED_TABLES, distributedDdl } from './clusterDdl.js';
import { MIGRATIONS } from './migrations.js';
import { APP_USAGE } from './rows.js';
import { TsvWriter } from './tsv.js';

const DB = 'towerwatch';
let dir: string;
let session: Session;
const run = (sql: string, format = 'JSONEachRow'): string => session.query(sql, format);
const json = <T>(sql: string): T[] =>
  run(sql)
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as T);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'towerwatch-distributed-'));
  const config = join(dir, 'config.xml');
  await writeFile(
    config,
    `<clickhouse>
      <tcp_port>9000</tcp_port>
      <remote_servers><tw><shard><replica><host>localhost</host><port>9000</port></replica></shard></tw></remote_servers>
      <macros><shard>1</shard><replica>r1</replica></macros>
    </clickhouse>`,
  );
  session = new Session(join(dir, 'data'), { connectionArgs: [`--config-file=${config}`] });
  run(`CREATE DATABASE IF NOT EXISTS ${DB}`);
  for (const m of MIGRATIONS) for (const s of m.statements({ db: DB, retentionDays: 30 })) run(s);
  // The Distributed tables as the cluster schema makes them, without ON CLUSTER (no Keeper here).
  for (const s of distributedDdl(DB, 'tw')) run(s.replace(" ON CLUSTER 'tw'", ''));
});
after(async () => {
  session?.close();
  await rm(dir, { recursive: true, force: true });
});

test('a one-shard cluster of the engine itself, and a *_all table over each data table', () => {
  assert.deepEqual(json<{ cluster: string; is_local: number }>("SELECT cluster, is_local FROM system.clusters WHERE cluster = 'tw'"), [
    { cluster: 'tw', is_local: 1 },
  ]);
  const tables = json<{ name: string; engine: string }>(
    `SELECT name, engine FROM system.tables WHERE database = '${DB}' AND name LIKE '%\\_all' ORDER BY name`,
  );
  assert.deepEqual(
    tables,
    Object.keys(DISTRIBUTED_TABLES)
      .sort()
      .map((t) => ({ name: `${t}_all`, engine: 'Distributed' })),
  );
});

test('inserts through app_usage_all land once per insert token, and the projections answer through it', () => {
  const w = new TsvWriter();
  for (let i = 0; i < 50; i++)
    APP_USAGE.writeRow(w, usageRow({ event_id: i, stream_seq: i + 1, ts: RECENT_TS + i * 61_000, enterprise_id: i % 2 ? 'acme' : 'globex' }));
  const body = w.finish().toString('utf8');
  const insert = `INSERT INTO ${DB}.app_usage_all (${APP_USAGE.columns.join(', ')})
    SETTINGS insert_deduplication_token = 'batch-1', distributed_foreground_insert = 1, date_time_input_format = 'basic' FORMAT TabSeparated
${body}`;
  run(insert);
  run(insert); // a retried batch: the same token
  assert.deepEqual(json(`SELECT toUInt32(count()) AS n FROM ${DB}.app_usage`), [{ n: 50 }]);
  assert.deepEqual(json(`SELECT toUInt32(count()) AS n FROM ${DB}.app_usage_all`), [{ n: 50 }]);
  // The rollups through *_all, answered from the projections (forced: a miss fails).
  for (const projection of ['per_minute', 'per_hour', 'device_days'] as const) {
    const query = projectionTotalQuery('app_usage', projection, DB).replace(`${DB}.app_usage GROUP`, `${DB}.app_usage_all GROUP`);
    assert.match(query, /app_usage_all/);
    assert.deepEqual(json(query.replace('sum(c) AS n', 'toUInt32(sum(c)) AS n')), [{ n: 50 }], projection);
  }
});

/**
 * The cluster DDL (clusterDdl.ts) parses in the engine, statement by statement (EXPLAIN AST):
 * running it needs a cluster with Keeper, which these machines do not have.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rows, withClickHouse } from '../testing/clickhouseFixture.js';
import { clusterMigrationStatements, clusterSchemaMigrationsDdl, clusterTtlDdl, DISTRIBUTED_TABLES, distributedDdl, onCluster } from './clusterDdl.js';
import { MIGRATIONS, TTL_COLUMNS, type TtlTable } from './migrations.js';

const clickhouse = withClickHouse('towerwatch-cluster-ddl-');

const all = (): string[] => [
  clusterSchemaMigrationsDdl('towerwatch', 'tw'),
  ...clusterMigrationStatements('towerwatch', 'tw', 30),
  ...distributedDdl('towerwatch', 'tw'),
  ...(Object.keys(TTL_COLUMNS) as TtlTable[]).map((t) => clusterTtlDdl('towerwatch', 'tw', t, 90)),
];

test('every statement of the cluster schema parses in the engine', async () => {
  const h = await clickhouse.open('cluster_ddl');
  const statements = all();
  assert.equal(
    statements.length,
    1 +
      MIGRATIONS.reduce((n, m) => n + m.statements({ db: 'towerwatch', retentionDays: 30 }).length, 0) +
      Object.keys(DISTRIBUTED_TABLES).length +
      Object.keys(TTL_COLUMNS).length,
  );
  for (const statement of statements) {
    const ast = await rows<{ explain: string }>(h, `EXPLAIN AST ${statement}`).catch((err: unknown) => {
      throw new Error(`does not parse: ${statement}\n${String(err)}`);
    });
    assert.ok(ast.length > 0, statement);
  }
});

test('each runs on the whole cluster, every table is replicated with the insert-token window, reads across shards go through *_all', () => {
  for (const statement of all()) assert.match(statement, /ON CLUSTER 'tw'/, statement);
  const creates = all().filter((s) => /^\s*CREATE (OR REPLACE )?TABLE/.test(s));
  for (const s of creates) {
    assert.match(s, /ENGINE = (Replicated\w*MergeTree\('\/clickhouse\/tables\/\{shard\}\/\{database\}\/\{table\}', '\{replica\}'|Distributed\('tw')/, s);
    assert.doesNotMatch(s, /non_replicated_deduplication_window/, s);
  }
  const replicatedData = creates.filter((s) => /ReplicatedMergeTree/.test(s) && /replicated_deduplication_window = 1000/.test(s));
  assert.ok(replicatedData.length >= 5, 'app_usage, violations, dead_letters, remedial_actions, discovery_sightings');
  // Engine arguments are kept after the replica path.
  assert.match(
    onCluster('CREATE TABLE IF NOT EXISTS db.t (a UInt8, b UInt64) ENGINE = SummingMergeTree((b)) ORDER BY a', 'tw'),
    /^CREATE TABLE IF NOT EXISTS db\.t ON CLUSTER 'tw' \(a UInt8, b UInt64\) ENGINE = ReplicatedSummingMergeTree\('\/clickhouse\/tables\/\{shard\}\/\{database\}\/\{table\}', '\{replica\}', \(b\)\) ORDER BY a$/,
  );
  assert.deepEqual(
    distributedDdl('towerwatch', 'tw').map((s) => /TABLE (\S+) .* Distributed\('tw', towerwatch, (\w+), (.+)\)$/s.exec(s.replace(/\s+/g, ' '))?.slice(1)),
    [
      ['towerwatch.app_usage_all', 'app_usage', 'cityHash64(enterprise_id)'],
      ['towerwatch.violations_all', 'violations', 'cityHash64(enterprise_id)'],
      ['towerwatch.remedial_actions_all', 'remedial_actions', 'cityHash64(enterprise_id)'],
      ['towerwatch.discovery_sightings_all', 'discovery_sightings', 'cityHash64(enterprise_id)'],
      ['towerwatch.dead_letters_all', 'dead_letters', 'stream_seq'],
      ['towerwatch.policy_versions_all', 'policy_versions', 'cityHash64(enterprise_id)'],
    ],
  );
  assert.throws(() => onCluster('ALTER TABLE db.t DROP COLUMN a', "tw'; DROP"), /cluster name/);
});

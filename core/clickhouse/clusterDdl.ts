/**
 * The schema's DDL for a ClickHouse cluster: each statement of the migrations rewritten to run
 * `ON CLUSTER`, every MergeTree engine made Replicated (Keeper path per shard, database and
 * table; the insert-token window as `replicated_deduplication_window`, so a retried batch is
 * dropped on every replica), and a Distributed `<table>_all` over each data table, sharded by
 * enterprise, for reads that span the shards.
 *
 * What these machines check: every statement parses in the engine (EXPLAIN AST,
 * clusterDdl.test.ts), and the Distributed layer runs over a one-shard cluster of the embedded
 * engine (clusterDistributed.test.ts, and the api and pipeline over the stand-in with
 * `cluster`). ON CLUSTER and the Replicated engines need Keeper, which they do not have.
 */
import { CLUSTER_NAME } from '../config.js';
import { DEDUPLICATION_WINDOW, MIGRATIONS, ttl, type DdlContext, type Migration, type TtlTable } from './migrations.js';
import type { DataTable } from './tables.js';

/** Keeper path of a replicated table's shard; the engine fills in the macros. */
export const REPLICA_PATH = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'";

/** Data tables read across shards, and their sharding key (rows of one enterprise on one shard). */
export const DISTRIBUTED_TABLES: Readonly<Record<DataTable, string>> = {
  app_usage: 'cityHash64(enterprise_id)',
  violations: 'cityHash64(enterprise_id)',
  remedial_actions: 'cityHash64(enterprise_id)',
  discovery_sightings: 'cityHash64(enterprise_id)',
  // Dead letters may have no enterprise (an undecodable frame): by stream sequence.
  dead_letters: 'stream_seq',
  policy_versions: 'cityHash64(enterprise_id)',
};

const NAME = String.raw`[A-Za-z_]\w*\.[A-Za-z_]\w*`;
/** Engine arguments, one level of nested parentheses deep (`SummingMergeTree((a, b))`). */
const ENGINE = /ENGINE\s*=\s*(\w*)MergeTree(?:\s*\(((?:[^()]|\([^()]*\))*)\))?/g;

/** `statement` (one of the migrations') for the cluster `cluster`. */
export function onCluster(statement: string, cluster: string): string {
  checkCluster(cluster);
  const on = `ON CLUSTER '${cluster}'`;
  return statement
    .replace(new RegExp(String.raw`^(\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:TABLE|MATERIALIZED\s+VIEW|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?${NAME})`, 'i'), `$1 ${on}`)
    .replace(new RegExp(String.raw`^(\s*ALTER\s+TABLE\s+${NAME})`, 'i'), `$1 ${on}`)
    .replace(new RegExp(String.raw`^(\s*DROP\s+(?:TABLE|VIEW)\s+(?:IF\s+EXISTS\s+)?${NAME})`, 'i'), `$1 ${on}`)
    .replace(ENGINE, (_, kind: string, args: string | undefined) => `ENGINE = Replicated${kind}MergeTree(${REPLICA_PATH}${args ? `, ${args}` : ''})`)
    .replace(/\bnon_replicated_deduplication_window\b/g, 'replicated_deduplication_window');
}

/** One migration's statements, for the cluster. */
export function clusterMigrationStatementsOf(m: Migration, ctx: DdlContext, cluster: string): string[] {
  return m.statements(ctx).map((s) => onCluster(s, cluster));
}

/** Every migration's statements, for the cluster. */
export function clusterMigrationStatements(db: string, cluster: string, retentionDays: number): string[] {
  return MIGRATIONS.flatMap((m) => clusterMigrationStatementsOf(m, { db, retentionDays }, cluster));
}

/** The migrations table, replicated so that every node sees which migrations ran. */
export function clusterSchemaMigrationsDdl(db: string, cluster: string): string {
  checkCluster(cluster);
  return `CREATE TABLE IF NOT EXISTS ${db}.schema_migrations ON CLUSTER '${cluster}' (
      version UInt32,
      name String,
      applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
    ) ENGINE = ReplicatedReplacingMergeTree(${REPLICA_PATH}) ORDER BY version
    SETTINGS replicated_deduplication_window = ${DEDUPLICATION_WINDOW}`;
}

/**
 * The Distributed `<table>_all` tables, recreated (they hold no data) so that columns added by
 * later migrations reach them too.
 */
export function distributedDdl(db: string, cluster: string): string[] {
  checkCluster(cluster);
  return (Object.keys(DISTRIBUTED_TABLES) as DataTable[]).map(
    (t) =>
      `CREATE OR REPLACE TABLE ${db}.${t}_all ON CLUSTER '${cluster}' AS ${db}.${t}
      ENGINE = Distributed('${cluster}', ${db}, ${t}, ${DISTRIBUTED_TABLES[t]})`,
  );
}

/** The TTL change of one table, on every node. */
export function clusterTtlDdl(db: string, cluster: string, table: TtlTable, days: number): string {
  checkCluster(cluster);
  return `ALTER TABLE ${db}.${table} ON CLUSTER '${cluster}' MODIFY TTL ${ttl(table, days)}`;
}

function checkCluster(cluster: string): void {
  if (!CLUSTER_NAME.test(cluster)) throw new RangeError(`a cluster name is letters, digits, _ and -, got '${cluster}'`);
}

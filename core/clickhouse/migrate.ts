/**
 * Brings a database to the schema of migrations.ts: numbered migrations recorded in
 * `schema_migrations`, then the retention TTLs reconciled with the configured days. On a cluster
 * (`handle.cluster`) the same migrations run ON CLUSTER with Replicated engines, the migrations
 * table is replicated, and the Distributed `*_all` tables are (re)made after a change
 * (clusterDdl.ts).
 */
import { ClickHouseError } from '@clickhouse/client';
import { MAX_RETENTION_DAYS } from '../config.js';
import type { LogLine } from '../log.js';
import { clusterMigrationStatementsOf, clusterSchemaMigrationsDdl, clusterTtlDdl, DISTRIBUTED_TABLES, distributedDdl } from './clusterDdl.js';
import { currentTtlClauses, hasEnterpriseRules } from './retention.js';
import { MIGRATIONS, SCHEMA_VERSION, TTL_COLUMNS, ttl, type DdlContext, type Migration, type TtlTable } from './migrations.js';
import { ClickHouseErrorCode, ClickHouseOpenError, type ClickHouseHandle } from './open.js';

export interface MigrateOptions {
  /** Days of history kept (TTL of every history table). */
  retentionDays: number;
  /** Called for each migration applied and each TTL changed. */
  log?: LogLine;
}

export interface MigrateResult {
  /** Versions applied by this call (empty when the schema was current). */
  applied: number[];
  /** Tables whose TTL was changed to `retentionDays` by this call. */
  ttlChanged: TtlTable[];
  /** On a cluster: whether the Distributed `*_all` tables were (re)made by this call. */
  distributedMade?: boolean;
}

/** The statements of each step, for one server or for a cluster. */
interface Ddl {
  migrationsTable(): string;
  migration(m: Migration, ctx: DdlContext): readonly string[];
  ttl(table: TtlTable, days: number): string;
}

const localDdl = (db: string): Ddl => ({
  migrationsTable: () => `CREATE TABLE IF NOT EXISTS ${db}.schema_migrations (
      version UInt32,
      name String,
      applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree ORDER BY version`,
  migration: (m, ctx) => m.statements(ctx),
  ttl: (table, days) => `ALTER TABLE ${db}.${table} MODIFY TTL ${ttl(table, days)}`,
});

const clusterDdl = (db: string, cluster: string): Ddl => ({
  migrationsTable: () => clusterSchemaMigrationsDdl(db, cluster),
  migration: (m, ctx) => clusterMigrationStatementsOf(m, ctx, cluster),
  ttl: (table, days) => clusterTtlDdl(db, cluster, table, days),
});

/**
 * Brings the schema to {@link SCHEMA_VERSION} and the TTLs to `retentionDays`. Safe to run at
 * every start and concurrently from several processes: every statement is idempotent, and a
 * migration is recorded only after all its statements succeeded. On a current schema it sends
 * no DDL.
 * @throws {ClickHouseOpenError} `invalid_options` for a bad `retentionDays`, when the
 *   database has migrations newer than this code (refusing to run an old binary on it), or
 *   when the cluster is not one the server knows; `open_failed` when the cluster refuses its
 *   DDL (no Keeper or distributed DDL on the servers), with the server's reason.
 */
export async function migrate(handle: ClickHouseHandle, options: MigrateOptions): Promise<MigrateResult> {
  const { retentionDays } = options;
  if (!Number.isInteger(retentionDays) || retentionDays < 1 || retentionDays > MAX_RETENTION_DAYS) {
    throw new ClickHouseOpenError(ClickHouseErrorCode.InvalidOptions, `retentionDays must be an integer 1–${MAX_RETENTION_DAYS}, got ${String(retentionDays)}`);
  }
  const { client, database: db, cluster } = handle;
  const log = options.log ?? (() => {});
  if (cluster !== null) await checkClusterKnown(handle, cluster);
  const ddl = cluster === null ? localDdl(db) : clusterDdl(db, cluster);
  const run = async (query: string): Promise<void> => {
    try {
      await client.command({ query });
    } catch (err) {
      throw cluster === null ? err : clusterRefused(err, cluster, query);
    }
  };

  const tables = await tableNames(handle);
  // Read before creating: a current schema gets no DDL at all (a cluster's ON CLUSTER queue stays quiet).
  if (!tables.has('schema_migrations')) await run(ddl.migrationsTable());
  const done = new Set(
    (await (await client.query({ query: `SELECT DISTINCT version FROM ${db}.schema_migrations`, format: 'JSONEachRow' })).json<{ version: number }>()).map(
      (r) => Number(r.version),
    ),
  );
  const newest = Math.max(0, ...done);
  if (newest > SCHEMA_VERSION) {
    throw new ClickHouseOpenError(
      ClickHouseErrorCode.InvalidOptions,
      `database ${db} has schema version ${newest}, newer than this towerwatch knows (${SCHEMA_VERSION}); upgrade towerwatch`,
    );
  }

  const applied: number[] = [];
  const ctx: DdlContext = { db, retentionDays };
  for (const m of [...MIGRATIONS].sort((a, b) => a.version - b.version)) {
    if (done.has(m.version)) continue;
    for (const statement of ddl.migration(m, ctx)) await run(statement);
    await client.insert({
      table: `${db}.schema_migrations`,
      values: [{ version: m.version, name: m.name }],
      format: 'JSONEachRow',
    });
    applied.push(m.version);
    log(`clickhouse: applied migration ${m.version} (${m.name})${cluster === null ? '' : ` on cluster ${cluster}`}`);
  }

  const ttlChanged: TtlTable[] = [];
  const current = await currentTtlDays(handle);
  const clauses = await currentTtlClauses(handle, Object.keys(TTL_COLUMNS) as TtlTable[]);
  for (const table of Object.keys(TTL_COLUMNS) as TtlTable[]) {
    if (current.get(table) === retentionDays) continue;
    // Retention per plan (retention.ts) owns a TTL with per-enterprise rules, the default included.
    if (hasEnterpriseRules(clauses.get(table) ?? '')) continue;
    await run(ddl.ttl(table, retentionDays));
    ttlChanged.push(table);
    log(`clickhouse: ${table} keeps ${retentionDays} days (was ${current.get(table) ?? 'none'})`);
  }
  if (cluster === null) return { applied, ttlChanged };

  // The Distributed tables copy their columns at creation: remade after any migration.
  const missing = Object.keys(DISTRIBUTED_TABLES).filter((t) => !tables.has(`${t}_all`));
  const remake = applied.length > 0 || missing.length > 0;
  if (remake) {
    for (const statement of distributedDdl(db, cluster)) await run(statement);
    log(
      `clickhouse: Distributed tables ${Object.keys(DISTRIBUTED_TABLES)
        .map((t) => `${t}_all`)
        .join(', ')} made on cluster ${cluster}`,
    );
  }
  return { applied, ttlChanged, distributedMade: remake };
}

/** Days of each history table's TTL as the server reports it (absent: no TTL found). */
export async function currentTtlDays(handle: ClickHouseHandle): Promise<Map<TtlTable, number>> {
  const rows = await (
    await handle.client.query({
      query: `SELECT name, create_table_query FROM system.tables WHERE database = {db:String} AND name IN {names:Array(String)}`,
      query_params: { db: handle.database, names: Object.keys(TTL_COLUMNS) },
      format: 'JSONEachRow',
    })
  ).json<{ name: string; create_table_query: string }>();
  const out = new Map<TtlTable, number>();
  for (const r of rows) {
    // e.g. "… TTL toDateTime(ts) + toIntervalDay(30) SETTINGS …"
    const days = /\bTTL\b[^]*?toIntervalDay\((\d+)\)/.exec(r.create_table_query)?.[1];
    if (days !== undefined) out.set(r.name as TtlTable, Number(days));
  }
  return out;
}

async function tableNames(handle: ClickHouseHandle): Promise<Set<string>> {
  const rs = await handle.client.query({
    query: 'SELECT name FROM system.tables WHERE database = {db:String}',
    query_params: { db: handle.database },
    format: 'JSONEachRow',
  });
  return new Set((await rs.json<{ name: string }>()).map((r) => r.name));
}

/** A cluster name the server does not know would fail on the first DDL; say so plainly first. */
async function checkClusterKnown(handle: ClickHouseHandle, cluster: string): Promise<void> {
  const rs = await handle.client.query({ query: 'SELECT DISTINCT cluster FROM system.clusters ORDER BY cluster', format: 'JSONEachRow' });
  const known = (await rs.json<{ cluster: string }>()).map((r) => r.cluster);
  if (!known.includes(cluster)) {
    throw new ClickHouseOpenError(
      ClickHouseErrorCode.InvalidOptions,
      `TOWERWATCH_CLICKHOUSE_CLUSTER is '${cluster}', which the server at ${handle.location} does not define in remote_servers ` +
        `(it knows: ${known.length === 0 ? 'none' : known.join(', ')})`,
    );
  }
}

function clusterRefused(err: unknown, cluster: string, query: string): unknown {
  if (!(err instanceof ClickHouseError)) return err;
  const head = query.trim().split('\n')[0]?.slice(0, 120) ?? '';
  return new ClickHouseOpenError(
    ClickHouseErrorCode.OpenFailed,
    `cluster '${cluster}' refused the schema's DDL (${head}…): ${err.message}${err.type ? ` (${err.type})` : ''}. ` +
      'ON CLUSTER and Replicated tables need Keeper (or ZooKeeper) and distributed_ddl configured on every server.',
    { cause: err },
  );
}

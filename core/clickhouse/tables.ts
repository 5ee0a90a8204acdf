/**
 * Which table a statement names for towerwatch's data tables: the table itself on one server
 * (or the embedded engine), its Distributed `<table>_all` in cluster mode, so that reads span
 * every shard and inserts go to the enterprise's shard (clusterDdl.ts makes those tables).
 * Every read and write of a data table names it through {@link tableOf}.
 */

/** The tables rows are written to and read from (each has a Distributed `*_all` on a cluster). */
export const DATA_TABLES = ['app_usage', 'violations', 'remedial_actions', 'discovery_sightings', 'dead_letters', 'policy_versions'] as const;
export type DataTable = (typeof DATA_TABLES)[number];

/** What {@link tableOf} needs of a handle. */
export interface TableScope {
  readonly database: string;
  /** The cluster the schema spans, or null. */
  readonly cluster: string | null;
}

export const isDataTable = (name: string): name is DataTable => (DATA_TABLES as readonly string[]).includes(name);

/** `db.table`, or `db.table_all` on a cluster. */
export function tableOf(scope: TableScope, table: DataTable): string {
  return `${scope.database}.${table}${scope.cluster === null ? '' : '_all'}`;
}

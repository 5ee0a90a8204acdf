/** Test helpers for the rollup projections (core/clickhouse/migrations.ts). */
import { PROJECTIONS } from '../clickhouse/index.js';

/**
 * SQL for the rows a projection counts, summed over its groups (column `n`), that ClickHouse
 * must answer from the projection itself (`force_optimize_projection`): equal to `count()` of
 * the table exactly when the projection is complete.
 */
export function projectionTotalQuery<T extends keyof typeof PROJECTIONS>(
  table: T,
  projection: keyof (typeof PROJECTIONS)[T] & string,
  database?: string,
): string {
  const { keys } = (PROJECTIONS[table] as Record<string, { keys: readonly string[] }>)[projection]!;
  const from = database === undefined ? table : `${database}.${table}`;
  return `SELECT sum(c) AS n FROM (SELECT count() AS c FROM ${from} GROUP BY ${keys.join(', ')}) SETTINGS force_optimize_projection = 1`;
}

/**
 * History kept per enterprise, by its plan's `retention_days`, as the TTL of the tables that
 * hold an enterprise's rows. One TTL per table:
 *
 *   <time> + toIntervalDay(<longest>),
 *   <time> + toIntervalDay(30) WHERE enterprise_id IN ('', 'e1', …),
 *   <time> + toIntervalDay(90) WHERE enterprise_id IN ('e2', …)
 *
 * The first rule keeps nothing longer than the longest retention any plan (or the configured
 * default) asks for, and drops whole day-parts at that age. The others delete the rows of the
 * enterprises that keep less, at the merges ClickHouse runs for TTL; rows of no enterprise
 * (unregistered devices: `''`) keep the configured default. An enterprise the TTL does not
 * name yet (made since the last change) keeps the longest until it is named: history is never
 * deleted early.
 *
 * Enterprise ids match ID_PATTERN (letters, digits, `_`, `-`), so they are quoted literally.
 * (A dictionary lookup in the TTL would need no rewrite per change, but ClickHouse refuses
 * non-deterministic functions such as dictGet in a TTL.)
 */
import { MAX_RETENTION_DAYS } from '../config.js';
import { ID_PATTERN } from '../domain.js';
import type { ClickHouseHandle } from './open.js';
import { TTL_COLUMNS, type TtlTable } from './migrations.js';

/** The tables whose rows belong to an enterprise (`enterprise_id`): their TTL follows the plans. */
export const RETENTION_TABLES = ['app_usage', 'violations', 'remedial_actions', 'discovery_sightings'] as const satisfies readonly TtlTable[];
export type RetentionTable = (typeof RETENTION_TABLES)[number];

export interface RetentionSpec {
  /** Days kept for rows of no enterprise, and for an enterprise whose plan says nothing usable. */
  readonly defaultDays: number;
  /** Days kept per enterprise (its plan's `retention_days`). */
  readonly enterprises: ReadonlyMap<string, number>;
}

/** Whether `days` is a retention this schema takes. */
export function isRetentionDays(days: unknown): days is number {
  return typeof days === 'number' && Number.isInteger(days) && days >= 1 && days <= MAX_RETENTION_DAYS;
}

/**
 * The TTL clause (without `TTL`) of `table` for `spec`, written as ClickHouse prints it back in
 * `create_table_query`, so that an unchanged spec compares equal and sends no DDL.
 * @throws {RangeError} for an enterprise id or a number of days the schema cannot take
 */
export function retentionTtl(table: RetentionTable, spec: RetentionSpec): string {
  const time = TTL_COLUMNS[table];
  if (!isRetentionDays(spec.defaultDays)) throw new RangeError(`defaultDays must be an integer 1–${MAX_RETENTION_DAYS}, got ${String(spec.defaultDays)}`);
  const byDays = new Map<number, string[]>([[spec.defaultDays, ['']]]);
  for (const [id, days] of spec.enterprises) {
    if (!ID_PATTERN.test(id)) throw new RangeError(`enterprise id '${id}' is not an identifier`);
    if (!isRetentionDays(days)) throw new RangeError(`retention of ${id} must be an integer 1–${MAX_RETENTION_DAYS} days, got ${String(days)}`);
    byDays.set(days, [...(byDays.get(days) ?? []), id]);
  }
  const longest = Math.max(...byDays.keys());
  const rules = [`${time} + toIntervalDay(${longest})`];
  for (const days of [...byDays.keys()].sort((a, b) => a - b)) {
    if (days === longest) continue;
    const ids = (byDays.get(days) ?? []).sort();
    rules.push(`${time} + toIntervalDay(${days}) WHERE enterprise_id IN (${ids.map((id) => `'${id}'`).join(', ')})`);
  }
  return rules.join(', ');
}

/** The TTL clause (without `TTL`) of each table as the server has it. */
export async function currentTtlClauses(handle: ClickHouseHandle, tables: readonly TtlTable[]): Promise<Map<TtlTable, string>> {
  const rs = await handle.client.query({
    query: 'SELECT name, create_table_query FROM system.tables WHERE database = {db:String} AND name IN {names:Array(String)}',
    query_params: { db: handle.database, names: tables },
    format: 'JSONEachRow',
  });
  const out = new Map<TtlTable, string>();
  for (const r of await rs.json<{ name: string; create_table_query: string }>()) {
    const clause = /\bTTL (.*?)(?: SETTINGS |$)/.exec(r.create_table_query)?.[1];
    if (clause !== undefined) out.set(r.name as TtlTable, clause);
  }
  return out;
}

/** Whether a table's TTL has per-enterprise rules (set by {@link applyRetention}, left alone by `migrate`). */
export function hasEnterpriseRules(clause: string): boolean {
  return /\bWHERE enterprise_id IN\b/.test(clause);
}

export interface ApplyRetentionOptions {
  /**
   * Recompute the TTL of the rows already stored (ClickHouse's `materialize_ttl_after_modify`):
   * needed when an enterprise with history keeps less than before; not when the change only
   * names new enterprises. @default true
   */
  materialize?: boolean;
}

/**
 * Brings each table's TTL to `spec`; a table already there gets no DDL. Returns the tables
 * changed. On a cluster the change runs ON CLUSTER.
 */
export async function applyRetention(handle: ClickHouseHandle, spec: RetentionSpec, options: ApplyRetentionOptions = {}): Promise<RetentionTable[]> {
  const current = await currentTtlClauses(handle, RETENTION_TABLES);
  const changed: RetentionTable[] = [];
  for (const table of RETENTION_TABLES) {
    const want = retentionTtl(table, spec);
    if (current.get(table) === want) continue;
    const on = handle.cluster === null ? '' : ` ON CLUSTER '${handle.cluster}'`;
    await handle.client.command({
      query: `ALTER TABLE ${handle.database}.${table}${on} MODIFY TTL ${want}`,
      clickhouse_settings: { materialize_ttl_after_modify: options.materialize === false ? 0 : 1 },
    });
    changed.push(table);
  }
  return changed;
}

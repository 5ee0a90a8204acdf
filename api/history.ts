/**
 * The api's reads of ClickHouse: every query parameterized (`{name:Type}`, values passed
 * apart from the SQL), every one scoped to one enterprise. Dashboard aggregates group by and
 * filter on the per-minute projections' keys only (minute, not ts), so ClickHouse answers
 * them from the projections: thousands of pre-aggregated rows instead of millions of events.
 */
import type { EvalEvent, Verdict } from '../rules-wasm/index.js';
import { type ClickHouseHandle, PER_HOUR, PER_MINUTE, type RowObject, tableOf, type TableScope, VIOLATIONS } from '../core/clickhouse/index.js';
import { seenAlertKey, type RecentIds } from './recentIds.js';

const MINUTE = PER_MINUTE.minute;
const HOUR = PER_HOUR.hour;
const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;

/**
 * A dashboard range on the projections' keys: the whole minutes that overlap [from, to), as
 * [lo, hi), of which the whole hours [h0, h1) are read from the per-hour projections and the
 * rest (at most 59 minutes at each end) from the per-minute ones. No whole hour: h0 = h1 = hi.
 */
export interface RollupSpan {
  lo: number;
  hi: number;
  h0: number;
  h1: number;
}

/**
 * Whole hours from which a range reads the per-hour projections. Reading both projections costs
 * one more read of a few ms in the embedded engine; on `bench api`'s 10M events that pays from
 * about a day and a half (24 h: 65 ms by minutes alone, 80 ms split; 72 h: 130 → 106 ms;
 * 7 d: 181 → 99 ms).
 */
export const HOURLY_FROM_MS = 36 * HOUR_MS;

export function rollupSpan(from: number, to: number, wholeHours = true): RollupSpan {
  const lo = Math.floor(from / MINUTE_MS) * MINUTE_MS;
  const hi = Math.floor((to - 1) / MINUTE_MS) * MINUTE_MS + MINUTE_MS;
  const h0 = Math.ceil(lo / HOUR_MS) * HOUR_MS;
  const h1 = Math.floor(hi / HOUR_MS) * HOUR_MS;
  return wholeHours && h1 - h0 >= HOURLY_FROM_MS ? { lo, hi, h0, h1 } : { lo, hi, h0: hi, h1: hi };
}

const at = (param: string): string => `fromUnixTimestamp64Milli({${param}:Int64}, 'UTC')`;
const ENTERPRISE = 'enterprise_id = {enterprise:String}';
/** The span's conditions; `p` prefixes its parameters' names (two spans in one statement). */
const hours = (p: string): string => `${ENTERPRISE} AND ${HOUR} >= ${at(`${p}h0`)} AND ${HOUR} < ${at(`${p}h1`)}`;
const edgeMinutes = (p: string): string => `${ENTERPRISE}
  AND ((${MINUTE} >= ${at(`${p}lo`)} AND ${MINUTE} < ${at(`${p}h0`)}) OR (${MINUTE} >= ${at(`${p}h1`)} AND ${MINUTE} < ${at(`${p}hi`)}))`;

/**
 * `SELECT <keys>, sum(n) AS n` over a span: one sub-select per projection, summed. `keys(time)`
 * gets the time key of the projection its sub-select reads (the hour or the minute).
 */
function rolledUp(table: string, span: RollupSpan, keys: (time: string) => string, groupBy: string, p = ''): string {
  const parts = [`SELECT ${keys(MINUTE)}, count() AS n FROM ${table} WHERE ${edgeMinutes(p)} GROUP BY ${groupBy}`];
  if (span.h0 < span.h1) parts.unshift(`SELECT ${keys(HOUR)}, count() AS n FROM ${table} WHERE ${hours(p)} GROUP BY ${groupBy}`);
  return `SELECT ${groupBy}, sum(n) AS n FROM (${parts.join(' UNION ALL ')}) GROUP BY ${groupBy}`;
}
const TS_RANGE = `enterprise_id = {enterprise:String}
  AND ts >= fromUnixTimestamp64Milli({from:Int64}, 'UTC')
  AND ts < fromUnixTimestamp64Milli({to:Int64}, 'UTC')`;

export interface RangeQuery {
  enterprise: string;
  from: number;
  to: number;
}

async function rows<T>(ch: ClickHouseHandle, query: string, params: Record<string, unknown>): Promise<T[]> {
  const rs = await ch.client.query({ query, query_params: params, format: 'JSONEachRow' });
  return rs.json<T>();
}

const num = (v: unknown): number => Number(v);
/** Violation breakdown rows read per dashboard query; beyond it the top lists count the largest groups only. */
const MAX_BREAKDOWN_ROWS = 100_000;

export interface DashboardMetrics {
  totals: { events: number; violations: number; by_verdict: { allow: number; deny: number; unregistered: number } };
  series: Array<{ t: string; events: number; allowed: number; denied: number; unregistered: number; violations: number }>;
  top_apps: Array<{ app_id: string; app_name: string; events: number; violations: number }>;
  top_users: Array<{ user_id: string; user_name: string; violations: number }>;
  top_towers: Array<{ tower_id: string; events: number; violations: number }>;
  top_policies: Array<{ policy_id: string; policy_name: string; severity: string; violations: number }>;
  violations_by: Array<{
    user_id: string;
    user_name: string;
    app_id: string;
    app_name: string;
    tower_id: string;
    policy_id: string;
    policy_name: string;
    violations: number;
  }>;
}

const WHO = 'user_id, user_name, app_id, app_name, tower_id, policy_id, policy_name, severity';

export type MetricsQuery = RangeQuery & { bucket: 'minute' | 'hour'; top: number };

/** A query with its parameters. */
export interface BoundQuery {
  query: string;
  params: Record<string, unknown>;
}

type MetricsPart = 'usageSeries' | 'violationSeries' | 'usageBy' | 'violationBy';

/**
 * The four reads of {@link dashboardMetrics} (two series and two breakdowns, all on projections),
 * as one statement: the embedded engine runs one query at a time, and one statement of four
 * reads took 24 h from p50/p90 41/50 to 35/41 ms on `bench api`'s 10M events. Each row is
 * `[part, row as JSON]`.
 */
export function dashboardMetricsQuery(scope: TableScope, q: MetricsQuery): BoundQuery {
  const usage = tableOf(scope, 'app_usage');
  const violations = tableOf(scope, 'violations');
  const span = rollupSpan(q.from, q.to);
  // Minute buckets cannot come from the per-hour projections; their span's parameters are `s_…`.
  const seriesSpan = q.bucket === 'hour' ? span : rollupSpan(q.from, q.to, false);
  const bucket = (time: string): string => `toUnixTimestamp(${q.bucket === 'hour' ? `toStartOfHour(${time})` : time}) AS t`;
  const parts: Record<MetricsPart, string> = {
    usageSeries: `${rolledUp(usage, seriesSpan, (time) => `${bucket(time)}, verdict`, 't, verdict', 's_')} ORDER BY t`,
    violationSeries: `${rolledUp(violations, seriesSpan, bucket, 't', 's_')} ORDER BY t`,
    usageBy: rolledUp(usage, span, () => 'app_id, app_name, tower_id', 'app_id, app_name, tower_id'),
    violationBy: `${rolledUp(violations, span, () => WHO, WHO)} ORDER BY n DESC LIMIT ${MAX_BREAKDOWN_ROWS}`,
  };
  const prefixed = Object.fromEntries(Object.entries(seriesSpan).map(([k, v]) => [`s_${k}`, v]));
  return {
    query: Object.entries(parts)
      .map(([part, sql]) => `SELECT '${part}' AS part, formatRowNoNewline('JSONEachRow', *) AS row FROM (${sql})`)
      .join('\nUNION ALL\n'),
    params: { enterprise: q.enterprise, ...span, ...prefixed },
  };
}

/** Counts per minute or hour, by verdict, and the top apps, users, towers and policies by violations. */
export async function dashboardMetrics(ch: ClickHouseHandle, q: MetricsQuery): Promise<DashboardMetrics> {
  const { query, params } = dashboardMetricsQuery(ch, q);
  const rs = await ch.client.query({ query, query_params: params, format: 'JSONCompactEachRow' });
  const read: Record<MetricsPart, unknown[]> = { usageSeries: [], violationSeries: [], usageBy: [], violationBy: [] };
  for (const [part, row] of await rs.json<[MetricsPart, string]>()) read[part].push(JSON.parse(row));
  // The top lists are summed from the breakdowns here.
  const usageSeries = read.usageSeries as Array<{ t: string; verdict: string; n: string }>;
  const violationSeries = read.violationSeries as Array<{ t: string; n: string }>;
  const usageBy = read.usageBy as Array<{ app_id: string; app_name: string; tower_id: string; n: string }>;
  const violationBy = read.violationBy as Array<Omit<DashboardMetrics['violations_by'][number], 'violations'> & { severity: string; n: string }>;
  const sum = <K>(m: Map<K, number>, k: K, n: number): void => void m.set(k, (m.get(k) ?? 0) + n);
  const appEvents = new Map<string, number>();
  const appNames = new Map<string, string>();
  const towerEvents = new Map<string, number>();
  for (const r of usageBy) {
    sum(appEvents, r.app_id, num(r.n));
    appNames.set(r.app_id, r.app_name);
    sum(towerEvents, r.tower_id, num(r.n));
  }
  const appViol = new Map<string, number>();
  const towerViol = new Map<string, number>();
  const userViol = new Map<string, number>();
  const userNames = new Map<string, string>();
  const policyViol = new Map<string, number>();
  const who = new Map<string, DashboardMetrics['violations_by'][number]>();
  for (const r of violationBy) {
    const n = num(r.n);
    sum(appViol, r.app_id, n);
    sum(towerViol, r.tower_id, n);
    sum(userViol, r.user_id, n);
    userNames.set(r.user_id, r.user_name);
    sum(policyViol, JSON.stringify([r.policy_id, r.policy_name, r.severity]), n);
    const k = JSON.stringify([r.user_id, r.app_id, r.tower_id, r.policy_id]);
    const w = who.get(k);
    if (w === undefined)
      who.set(k, {
        user_id: r.user_id,
        user_name: r.user_name,
        app_id: r.app_id,
        app_name: r.app_name,
        tower_id: r.tower_id,
        policy_id: r.policy_id,
        policy_name: r.policy_name,
        violations: n,
      });
    else w.violations += n;
  }
  const top = <T>(items: T[], by: (t: T) => number, tie: (t: T) => string): T[] =>
    items.sort((a, b) => by(b) - by(a) || (tie(a) < tie(b) ? -1 : 1)).slice(0, q.top);
  const apps = top(
    [...appEvents],
    ([, n]) => n,
    ([id]) => id,
  );
  const users = top(
    [...userViol],
    ([, n]) => n,
    ([id]) => id,
  );
  const policies = top(
    [...policyViol],
    ([, n]) => n,
    ([k]) => k,
  );
  const whoTop = top(
    [...who.values()],
    (w) => w.violations,
    (w) => `${w.user_id} ${w.app_id} ${w.tower_id}`,
  );

  const series = new Map<number, DashboardMetrics['series'][number]>();
  const point = (t: number): DashboardMetrics['series'][number] => {
    let s = series.get(t);
    if (s === undefined) series.set(t, (s = { t: new Date(t * 1000).toISOString(), events: 0, allowed: 0, denied: 0, unregistered: 0, violations: 0 }));
    return s;
  };
  const byVerdict = { allow: 0, deny: 0, unregistered: 0 };
  for (const r of usageSeries) {
    const s = point(num(r.t));
    const n = num(r.n);
    s.events += n;
    if (r.verdict === 'allow') s.allowed += n;
    else if (r.verdict === 'deny') s.denied += n;
    else s.unregistered += n;
    if (r.verdict in byVerdict) byVerdict[r.verdict as keyof typeof byVerdict] += n;
  }
  let violations = 0;
  for (const r of violationSeries) {
    point(num(r.t)).violations += num(r.n);
    violations += num(r.n);
  }
  const towerIds = new Set([...towerEvents.keys(), ...towerViol.keys()]);
  return {
    totals: { events: byVerdict.allow + byVerdict.deny + byVerdict.unregistered, violations, by_verdict: byVerdict },
    series: [...series.entries()].sort((a, b) => a[0] - b[0]).map(([, s]) => s),
    top_apps: apps.map(([id, n]) => ({ app_id: id, app_name: appNames.get(id) ?? '', events: n, violations: appViol.get(id) ?? 0 })),
    top_users: users.map(([id, n]) => ({ user_id: id, user_name: userNames.get(id) ?? '', violations: n })),
    top_towers: [...towerIds]
      .map((id) => ({ tower_id: id, events: towerEvents.get(id) ?? 0, violations: towerViol.get(id) ?? 0 }))
      .sort((a, b) => b.violations - a.violations || b.events - a.events || a.tower_id.localeCompare(b.tower_id))
      .slice(0, q.top),
    top_policies: policies.map(([k, n]) => {
      const [policy_id, policy_name, severity] = JSON.parse(k) as [string, string, string];
      return { policy_id, policy_name, severity, violations: n };
    }),
    violations_by: whoTop,
  };
}

/** What an alert read back leaves out of its violations row: the enterprise is the query's, the rest is bookkeeping. */
const NOT_READ = ['enterprise_id', 'event_id', 'stream_seq', 'policy_version'] as const;
export type AlertRow = Omit<RowObject<typeof VIOLATIONS>, (typeof NOT_READ)[number]>;

const ALERT_COLUMNS = VIOLATIONS.columns
  .filter((c) => !(NOT_READ as readonly string[]).includes(c))
  .map((c) => (c === 'ts' ? 'toUnixTimestamp64Milli(ts) AS ts_ms' : c))
  .join(', ');

function toAlert(r: Record<string, unknown>): AlertRow {
  const { ts_ms, ...rest } = r;
  return { ...(rest as unknown as Omit<AlertRow, 'ts'>), ts: num(ts_ms) };
}

export interface AlertFilters {
  severity?: readonly string[] | undefined;
  user_id?: string | undefined;
  app_id?: string | undefined;
  tower_id?: string | undefined;
  device_id?: string | undefined;
  policy_id?: string | undefined;
}

const FILTER_SQL: Readonly<Record<keyof AlertFilters, string>> = {
  severity: 'severity IN {severity:Array(String)}',
  user_id: 'user_id = {user_id:String}',
  app_id: 'app_id = {app_id:String}',
  tower_id: 'tower_id = {tower_id:String}',
  device_id: 'device_id = {device_id:String}',
  policy_id: 'policy_id = {policy_id:String}',
};

/** Recent violations, newest first, and how many match in all. */
export async function recentAlerts(
  ch: ClickHouseHandle,
  q: RangeQuery & { filters: AlertFilters; limit: number; offset: number },
): Promise<{ alerts: AlertRow[]; total: number }> {
  const where = [TS_RANGE];
  const params: Record<string, unknown> = { enterprise: q.enterprise, from: q.from, to: q.to, limit: q.limit, offset: q.offset };
  for (const [k, v] of Object.entries(q.filters) as Array<[keyof AlertFilters, unknown]>) {
    if (v === undefined) continue;
    where.push(FILTER_SQL[k]);
    params[k] = v;
  }
  const sql = where.join(' AND ');
  const [alerts, count] = await Promise.all([
    rows<Record<string, unknown>>(
      ch,
      `SELECT ${ALERT_COLUMNS} FROM ${tableOf(ch, 'violations')} AS violations WHERE ${sql} ORDER BY violations.ts DESC, alert_id LIMIT {limit:UInt32} OFFSET {offset:UInt32}`,
      params,
    ),
    rows<{ n: string }>(ch, `SELECT count() AS n FROM ${tableOf(ch, 'violations')} WHERE ${sql}`, params),
  ]);
  return { alerts: alerts.map(toAlert), total: num(count[0]?.n ?? 0) };
}

/** One violation of this enterprise, or null (also when it is another enterprise's). */
export async function findAlert(ch: ClickHouseHandle, enterprise: string, alertId: string): Promise<AlertRow | null> {
  const found = await rows<Record<string, unknown>>(
    ch,
    `SELECT ${ALERT_COLUMNS} FROM ${tableOf(ch, 'violations')} AS violations WHERE enterprise_id = {enterprise:String} AND alert_id = {alert:String} LIMIT 1`,
    { enterprise, alert: alertId },
  );
  return found[0] === undefined ? null : toAlert(found[0]);
}

/** What one stored event's verdict was decided on, and the verdict (for replaying it). */
export interface DecidedEvent {
  ts: number;
  carrier: string;
  tower_id: string;
  event_id: number;
  device_id: string;
  user_id: string;
  app_id: string;
  app_name: string;
  app_category: string;
  action_id: string;
  action_name: string;
  bytes_up: number;
  bytes_down: number;
  verdict: string;
  policy_id: string;
  rule_id: string;
  severity: string;
  remediation: string;
  policy_version: string;
  role_ids: string;
  region: string;
  os: string;
  os_version: string;
  /** 1 when the row has the evaluator's inputs (schema 9 and later). */
  decision_inputs: number;
}

export interface ShadowSummary {
  /** Events a shadow module decided (the enterprise had something in shadow mode). */
  evaluated: number;
  /** Allowed as enforced, denied in shadow; and the other way. */
  would_deny: number;
  would_allow: number;
  by_rule: Array<{ policy_id: string; rule_id: string | null; would_deny: number; would_allow: number }>;
  top_users: Array<{ user_id: string; user_name: string; differing: number }>;
  top_apps: Array<{ app_id: string; app_name: string; differing: number }>;
}

/** What shadow-mode policies would have done in a window (of one policy: its shadow decisions). */
export async function shadowSummary(ch: ClickHouseHandle, q: RangeQuery & { policyId?: string | undefined }): Promise<ShadowSummary> {
  const table = tableOf(ch, 'app_usage');
  const params = { enterprise: q.enterprise, from: q.from, to: q.to, policy: q.policyId ?? '' };
  const where = `enterprise_id = {enterprise:String} AND ts >= fromUnixTimestamp64Milli({from:Int64}, 'UTC') AND ts < fromUnixTimestamp64Milli({to:Int64}, 'UTC')
    AND shadow_verdict != ''${q.policyId === undefined ? '' : ' AND shadow_policy_id = {policy:String}'}`;
  const differs = "toString(verdict) != toString(shadow_verdict) AND verdict != 'unregistered'";
  const [totals, byRule, users, apps] = await Promise.all([
    rows<Record<string, string>>(
      ch,
      `SELECT toString(count()) AS evaluated, toString(countIf(verdict = 'allow' AND shadow_verdict = 'deny')) AS would_deny,
        toString(countIf(verdict = 'deny' AND shadow_verdict = 'allow')) AS would_allow FROM ${table} WHERE ${where}`,
      params,
    ),
    rows<Record<string, string>>(
      ch,
      `SELECT shadow_policy_id AS policy_id, shadow_rule_id AS rule_id, toString(countIf(shadow_verdict = 'deny')) AS would_deny, toString(countIf(shadow_verdict = 'allow')) AS would_allow
        FROM ${table} WHERE ${where} AND ${differs} GROUP BY policy_id, rule_id ORDER BY count() DESC, rule_id LIMIT 50`,
      params,
    ),
    rows<Record<string, string>>(
      ch,
      `SELECT user_id, any(user_name) AS user_name, toString(count()) AS n FROM ${table} WHERE ${where} AND ${differs} GROUP BY user_id ORDER BY count() DESC, user_id LIMIT 10`,
      params,
    ),
    rows<Record<string, string>>(
      ch,
      `SELECT app_id, any(app_name) AS app_name, toString(count()) AS n FROM ${table} WHERE ${where} AND ${differs} GROUP BY app_id ORDER BY count() DESC, app_id LIMIT 10`,
      params,
    ),
  ]);
  const t = totals[0] ?? {};
  return {
    evaluated: Number(t['evaluated'] ?? 0),
    would_deny: Number(t['would_deny'] ?? 0),
    would_allow: Number(t['would_allow'] ?? 0),
    by_rule: byRule.map((r) => ({
      policy_id: String(r['policy_id']),
      rule_id: r['rule_id'] === '' ? null : String(r['rule_id']),
      would_deny: Number(r['would_deny']),
      would_allow: Number(r['would_allow']),
    })),
    top_users: users.map((r) => ({ user_id: String(r['user_id']), user_name: String(r['user_name']), differing: Number(r['n']) })),
    top_apps: apps.map((r) => ({ app_id: String(r['app_id']), app_name: String(r['app_name']), differing: Number(r['n']) })),
  };
}

/** The columns of a stored usage row that a replay reads. */
export type StoredDecision = Pick<
  DecidedEvent,
  | 'ts'
  | 'tower_id'
  | 'app_name'
  | 'app_category'
  | 'action_name'
  | 'bytes_up'
  | 'bytes_down'
  | 'verdict'
  | 'rule_id'
  | 'policy_id'
  | 'severity'
  | 'remediation'
  | 'role_ids'
  | 'region'
  | 'os'
  | 'os_version'
>;

/** The evaluator's input as the pipeline built it (batchProcessor.ts), from a stored row. */
export function evalEventOfStored(row: StoredDecision): EvalEvent {
  const orNone = (s: string): string | undefined => (s === '' ? undefined : s);
  return {
    role_ids: row.role_ids === '' ? [] : row.role_ids.split(','),
    app: row.app_name,
    app_category: orNone(row.app_category),
    action: row.action_name,
    tower_id: row.tower_id,
    region: orNone(row.region),
    os: orNone(row.os),
    os_version: orNone(row.os_version),
    ts: row.ts,
    bytes_up: row.bytes_up,
    bytes_down: row.bytes_down,
  };
}

/** The verdict a stored row records ('' columns as null). */
export function storedVerdictOf(row: StoredDecision): Verdict {
  const orNull = <T extends string>(s: string): T | null => (s === '' ? null : (s as T));
  return {
    permission: row.verdict as Verdict['permission'],
    rule_id: orNull(row.rule_id),
    policy_id: orNull(row.policy_id),
    severity: orNull<NonNullable<Verdict['severity']>>(row.severity),
    remediation: orNull<NonNullable<Verdict['remediation']>>(row.remediation),
  };
}

/** One stored event of this enterprise by its carrier, tower and tower event id, or null. */
export async function findDecidedEvent(
  ch: ClickHouseHandle,
  enterprise: string,
  carrier: string,
  tower: string,
  eventId: number,
): Promise<DecidedEvent | null> {
  const found = await rows<Record<string, unknown>>(
    ch,
    `SELECT toUnixTimestamp64Milli(ts) AS ts_ms, carrier, tower_id, toString(event_id) AS event_id_text, device_id, user_id, app_id, app_name, app_category,
        action_id, action_name, toString(bytes_up) AS bytes_up_text, toString(bytes_down) AS bytes_down_text, verdict, policy_id, rule_id, severity, remediation,
        policy_version, role_ids, region, os, os_version, decision_inputs
      FROM ${tableOf(ch, 'app_usage')} WHERE enterprise_id = {enterprise:String} AND carrier = {carrier:String} AND tower_id = {tower:String}
        AND event_id = {event:UInt64} LIMIT 1`,
    { enterprise, carrier, tower, event: eventId },
  );
  const r = found[0];
  if (r === undefined) return null;
  const text = (k: string): string => String(r[k] ?? '');
  return {
    ts: Number(r['ts_ms']),
    carrier: text('carrier'),
    tower_id: text('tower_id'),
    // Aliases of their own: a column's alias would shadow it in WHERE.
    event_id: Number(r['event_id_text']),
    device_id: text('device_id'),
    user_id: text('user_id'),
    app_id: text('app_id'),
    app_name: text('app_name'),
    app_category: text('app_category'),
    action_id: text('action_id'),
    action_name: text('action_name'),
    bytes_up: Number(r['bytes_up_text']),
    bytes_down: Number(r['bytes_down_text']),
    verdict: text('verdict'),
    policy_id: text('policy_id'),
    rule_id: text('rule_id'),
    severity: text('severity'),
    remediation: text('remediation'),
    policy_version: text('policy_version'),
    role_ids: text('role_ids'),
    region: text('region'),
    os: text('os'),
    os_version: text('os_version'),
    decision_inputs: Number(r['decision_inputs']),
  };
}

export interface UsageRow {
  ts: number;
  device_id: string;
  app_id: string;
  app_name: string;
  action_id: string;
  action_name: string;
  tower_id: string;
  carrier: string;
  verdict: string;
  policy_name: string;
  severity: string;
  bytes_up: number;
  bytes_down: number;
}

/** One user's app usage, newest first. */
export async function userAppUsage(
  ch: ClickHouseHandle,
  q: RangeQuery & { user: string; limit: number; offset: number },
): Promise<{ usage: UsageRow[]; total: number }> {
  const params = { enterprise: q.enterprise, from: q.from, to: q.to, user: q.user, limit: q.limit, offset: q.offset };
  const where = `${TS_RANGE} AND user_id = {user:String}`;
  const [usage, count] = await Promise.all([
    rows<Record<string, unknown>>(
      ch,
      `SELECT toUnixTimestamp64Milli(ts) AS ts_ms, device_id, app_id, app_name, action_id, action_name, tower_id, carrier, verdict, policy_name, severity, bytes_up, bytes_down
       FROM ${tableOf(ch, 'app_usage')} AS app_usage WHERE ${where} ORDER BY app_usage.ts DESC, event_id LIMIT {limit:UInt32} OFFSET {offset:UInt32}`,
      params,
    ),
    rows<{ n: string }>(ch, `SELECT count() AS n FROM ${tableOf(ch, 'app_usage')} WHERE ${where}`, params),
  ]);
  return {
    usage: usage.map(({ ts_ms, ...r }) => ({ ...(r as unknown as UsageRow), ts: num(ts_ms), bytes_up: num(r['bytes_up']), bytes_down: num(r['bytes_down']) })),
    total: num(count[0]?.n ?? 0),
  };
}

export interface RemedialActionRow {
  action_id: string;
  alert_id: string;
  action: string;
  status: string;
  trigger: string;
  device_id: string;
  tower_id: string;
  app_id: string;
  attempts: number;
  reason: string;
  requested_by: string;
  executed_at: number;
}

/**
 * The row of alert `alertId` through `find()`. Alerts reach pages before their rows are stored
 * (pipeline/pipeline.ts), so a click on a brand-new alert may come a moment before its row: for
 * an alert this api node has seen (`seen`, api/recentIds.ts), `find()` is asked again every
 * 100 ms for up to `ms` while it finds nothing; one it has not seen is answered at once.
 */
export async function findAlertRow<T>(
  seen: RecentIds,
  enterprise: string,
  alertId: string,
  find: () => Promise<T | null>,
  ms = ALERT_ROW_WAIT_MS,
): Promise<T | null> {
  const deadline = seen.has(seenAlertKey(enterprise, alertId)) ? Date.now() + ms : 0;
  for (;;) {
    const found = await find();
    if (found !== null || Date.now() >= deadline) return found;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** How long a lookup of a seen alert's row waits for it to be stored. */
export const ALERT_ROW_WAIT_MS = 3000;

/** One remedial action of the enterprise by its id (its latest outcome), or null when none is recorded. */
export async function findRemedialAction(ch: ClickHouseHandle, enterprise: string, actionId: string): Promise<RemedialActionRow | null> {
  const found = await rows<Record<string, unknown>>(
    ch,
    `SELECT action_id, alert_id, action, status, trigger, device_id, tower_id, app_id, attempts, reason, requested_by, toUnixTimestamp64Milli(executed_at) AS executed_ms
     FROM ${tableOf(ch, 'remedial_actions')} AS remedial_actions WHERE enterprise_id = {enterprise:String} AND action_id = {action:String}
     ORDER BY remedial_actions.executed_at DESC LIMIT 1`,
    { enterprise, action: actionId },
  );
  const r = found[0];
  if (r === undefined) return null;
  const { executed_ms, attempts, ...rest } = r;
  return { ...(rest as unknown as Omit<RemedialActionRow, 'executed_at' | 'attempts'>), attempts: num(attempts), executed_at: num(executed_ms) };
}

/** The enterprise's remedial actions, newest first. */
export async function remedialActions(
  ch: ClickHouseHandle,
  q: { enterprise: string; from: number; to: number; status?: string | undefined; device_id?: string | undefined; limit: number; offset: number },
): Promise<{ actions: RemedialActionRow[]; total: number }> {
  const where = [
    'enterprise_id = {enterprise:String}',
    "executed_at >= fromUnixTimestamp64Milli({from:Int64}, 'UTC')",
    "executed_at < fromUnixTimestamp64Milli({to:Int64}, 'UTC')",
  ];
  const params: Record<string, unknown> = { enterprise: q.enterprise, from: q.from, to: q.to, limit: q.limit, offset: q.offset };
  if (q.status !== undefined) {
    where.push('status = {status:String}');
    params['status'] = q.status;
  }
  if (q.device_id !== undefined) {
    where.push('device_id = {device:String}');
    params['device'] = q.device_id;
  }
  const sql = where.join(' AND ');
  const [list, count] = await Promise.all([
    rows<Record<string, unknown>>(
      ch,
      `SELECT action_id, alert_id, action, status, trigger, device_id, tower_id, app_id, attempts, reason, requested_by, toUnixTimestamp64Milli(executed_at) AS executed_ms
       FROM ${tableOf(ch, 'remedial_actions')} AS remedial_actions WHERE ${sql} ORDER BY remedial_actions.executed_at DESC, action_id LIMIT {limit:UInt32} OFFSET {offset:UInt32}`,
      params,
    ),
    rows<{ n: string }>(ch, `SELECT count() AS n FROM ${tableOf(ch, 'remedial_actions')} WHERE ${sql}`, params),
  ]);
  return {
    actions: list.map(({ executed_ms, attempts, ...r }) => ({
      ...(r as unknown as Omit<RemedialActionRow, 'executed_at' | 'attempts'>),
      attempts: num(attempts),
      executed_at: num(executed_ms),
    })),
    total: num(count[0]?.n ?? 0),
  };
}

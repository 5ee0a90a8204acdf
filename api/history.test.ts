/**
 * `/dashboard/metrics`' queries on the embedded engine: a range's whole hours come from the
 * per-hour projections and its ends from the per-minute ones, and the sum is exact for any
 * range (checked against the same rows summed here), whatever its edges.
 */
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { APP_USAGE, type AppUsageRow, type ClickHouseHandle, migrate, VIOLATIONS, type ViolationRow } from '../core/clickhouse/index.js';
import { TsvWriter } from '../core/clickhouse/tsv.js';
import { INSERT_SETTINGS, rows, usageRow, withClickHouse } from '../core/testing/clickhouseFixture.js';
import { dashboardMetrics, dashboardMetricsQuery, type DashboardMetrics, type MetricsQuery, rollupSpan } from './history.js';

const clickhouse = withClickHouse('towerwatch-history-');
const MIN = 60_000;
const HOUR = 3_600_000;
/** The newest whole hour, minus 2: every range below ends before now. */
const H = Math.floor(Date.now() / HOUR) * HOUR - 2 * HOUR;

let h: ClickHouseHandle;
const usage: AppUsageRow[] = [];
const violations: ViolationRow[] = [];

before(async () => {
  h = await clickhouse.open('metrics');
  await migrate(h, { retentionDays: 30 });
  // 4,000 events over the 52 hours before H + 1 h, at odd milliseconds; every 5th is a violation.
  let seed = 7;
  const next = (n: number): number => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31), seed % n);
  for (let i = 0; i < 4000; i++) {
    const deny = i % 5 === 0;
    const row = usageRow({
      event_id: i,
      stream_seq: i + 1,
      ts: H - 51 * HOUR + next(52 * HOUR),
      enterprise_id: i % 7 === 0 ? 'globex' : 'acme',
      tower_id: `tower-${next(3)}`,
      app_id: ['slack', 'zoom', 'tiktok'][next(3)]!,
      user_id: `u-${next(4)}`,
      verdict: deny ? 'deny' : i % 11 === 0 ? 'unregistered' : 'allow',
      severity: deny ? (['low', 'high'] as const)[next(2)]! : '',
      policy_id: deny ? `p-${next(2)}` : 'p-0',
    });
    row.app_name = row.app_id.toUpperCase();
    row.user_name = row.user_id.toUpperCase();
    row.policy_name = row.policy_id.toUpperCase();
    usage.push(row);
    if (deny) violations.push({ ...row, alert_id: `att:${row.tower_id}:${i}`, tower_location: 'Somewhere', region: 'us' });
  }
  // Several inserts: several parts, each with its own projection rows to be summed.
  for (let part = 0; part < 4; part++) {
    const w = new TsvWriter();
    for (const r of usage.filter((_, i) => i % 4 === part)) APP_USAGE.writeRow(w, r);
    await h.insertFormatted({ table: 'app_usage', columns: APP_USAGE.columns, format: 'TabSeparated', body: w.finish(), settings: INSERT_SETTINGS });
    const wv = new TsvWriter();
    for (const r of violations.filter((_, i) => i % 4 === part)) VIOLATIONS.writeRow(wv, r);
    await h.insertFormatted({ table: 'violations', columns: VIOLATIONS.columns, format: 'TabSeparated', body: wv.finish(), settings: INSERT_SETTINGS });
  }
});

/** What dashboardMetrics must answer, summed here from the rows: whole minutes that overlap [from, to). */
function expected(q: MetricsQuery): Omit<DashboardMetrics, 'top_policies'> {
  const lo = Math.floor(q.from / MIN) * MIN;
  const hi = Math.floor((q.to - 1) / MIN) * MIN + MIN;
  const inRange = (r: { enterprise_id: string; ts: number }): boolean => r.enterprise_id === q.enterprise && r.ts >= lo && r.ts < hi;
  const bucketOf = (ts: number): string => new Date(Math.floor(ts / (q.bucket === 'hour' ? HOUR : MIN)) * (q.bucket === 'hour' ? HOUR : MIN)).toISOString();
  const series = new Map<string, DashboardMetrics['series'][number]>();
  const point = (ts: number) => {
    const t = bucketOf(ts);
    if (!series.has(t)) series.set(t, { t, events: 0, allowed: 0, denied: 0, unregistered: 0, violations: 0 });
    return series.get(t)!;
  };
  const count = <K>(m: Map<K, number>, k: K): void => void m.set(k, (m.get(k) ?? 0) + 1);
  const apps = new Map<string, number>();
  const towers = new Map<string, number>();
  const appV = new Map<string, number>();
  const towerV = new Map<string, number>();
  const users = new Map<string, number>();
  const who = new Map<string, number>();
  const byVerdict = { allow: 0, deny: 0, unregistered: 0 };
  for (const r of usage.filter(inRange)) {
    const p = point(r.ts);
    p.events++;
    if (r.verdict === 'allow') p.allowed++;
    else if (r.verdict === 'deny') p.denied++;
    else p.unregistered++;
    byVerdict[r.verdict]++;
    count(apps, r.app_id);
    count(towers, r.tower_id);
  }
  const vs = violations.filter(inRange);
  for (const v of vs) {
    point(v.ts).violations++;
    count(appV, v.app_id);
    count(towerV, v.tower_id);
    count(users, v.user_id);
    count(who, JSON.stringify([v.user_id, v.app_id, v.tower_id, v.policy_id]));
  }
  return {
    totals: { events: byVerdict.allow + byVerdict.deny + byVerdict.unregistered, violations: vs.length, by_verdict: byVerdict },
    series: [...series.values()].sort((a, b) => (a.t < b.t ? -1 : 1)),
    top_apps: [...apps].map(([id, n]) => ({ app_id: id, app_name: id.toUpperCase(), events: n, violations: appV.get(id) ?? 0 })),
    top_users: [...users].map(([id, n]) => ({ user_id: id, user_name: id.toUpperCase(), violations: n })),
    top_towers: [...new Set([...towers.keys(), ...towerV.keys()])].map((id) => ({
      tower_id: id,
      events: towers.get(id) ?? 0,
      violations: towerV.get(id) ?? 0,
    })),
    violations_by: [...who].map(([k, n]) => {
      const [user_id, app_id, tower_id, policy_id] = JSON.parse(k) as string[];
      return {
        user_id: user_id!,
        user_name: user_id!.toUpperCase(),
        app_id: app_id!,
        app_name: app_id!.toUpperCase(),
        tower_id: tower_id!,
        policy_id: policy_id!,
        policy_name: policy_id!.toUpperCase(),
        violations: n,
      };
    }),
  };
}

const sorted = <T>(xs: T[]): T[] =>
  xs
    .map((x) => JSON.stringify(x))
    .sort()
    .map((s) => JSON.parse(s) as T);

/** Ranges with every kind of edge: unaligned, whole hours, under an hour, across one hour's end. */
const RANGES: Array<[string, number, number]> = [
  ['50 h, unaligned to the ms', H - 50 * HOUR + 37_123, H - 13 * MIN + 5_001],
  ['whole hours', H - 5 * HOUR, H],
  ['40 whole hours', H - 40 * HOUR, H],
  ['20 minutes inside an hour', H - 40 * MIN, H - 20 * MIN],
  ['across an hour, no whole hour', H - 30 * MIN + 1, H + 20 * MIN - 1],
  ['36 whole hours and a minute either side', H - 36 * HOUR - MIN, H + MIN],
  ['one millisecond', H + 5 * MIN, H + 5 * MIN + 1],
];

for (const bucket of ['hour', 'minute'] as const) {
  for (const [name, from, to] of RANGES) {
    test(`metrics over ${name}, by ${bucket}, equal the rows summed`, async () => {
      for (const enterprise of ['acme', 'globex']) {
        const q: MetricsQuery = { enterprise, from, to, bucket, top: 100 };
        const { top_policies, ...got } = await dashboardMetrics(h, q);
        const want = expected(q);
        assert.deepEqual(got.totals, want.totals);
        assert.deepEqual(got.series, want.series);
        for (const k of ['top_apps', 'top_users', 'top_towers', 'violations_by'] as const)
          assert.deepEqual(sorted<unknown>(got[k]), sorted<unknown>(want[k]), k);
        assert.equal(
          top_policies.reduce((n, p) => n + p.violations, 0),
          want.totals.violations,
        );
      }
    });
  }
}

test('from 36 h, the whole hours of a range are read from the per-hour projections, its ends from the per-minute ones', async () => {
  assert.deepEqual(rollupSpan(H - 50 * HOUR + 37_123, H - 13 * MIN + 5_001), {
    lo: H - 50 * HOUR,
    hi: H - 12 * MIN,
    h0: H - 50 * HOUR,
    h1: H - HOUR,
  });
  assert.deepEqual(rollupSpan(H - 30 * MIN, H + 20 * MIN), { lo: H - 30 * MIN, hi: H + 20 * MIN, h0: H + 20 * MIN, h1: H + 20 * MIN });
  // 35 whole hours: not worth a second read.
  assert.deepEqual(rollupSpan(H - 35 * HOUR - 1, H), { lo: H - 35 * HOUR - MIN, hi: H, h0: H, h1: H });
  assert.deepEqual(rollupSpan(H - 36 * HOUR, H), { lo: H - 36 * HOUR, hi: H, h0: H - 36 * HOUR, h1: H });
  const reads = async (q: MetricsQuery): Promise<string[]> => {
    const out: string[] = [];
    const { query, params } = dashboardMetricsQuery(h, q);
    const plan = await rows<{ explain: string }>(h, `EXPLAIN ${query}`, params);
    for (const { explain } of plan) {
      const read = /ReadFromMergeTree\s*(.*)$/.exec(explain);
      if (read) out.push(read[1]!.trim());
    }
    return out.sort();
  };
  // Two days by hour: every query reads both; never the raw rows.
  assert.deepEqual(await reads({ enterprise: 'acme', from: H - 48 * HOUR + 90_000, to: H - 30_000, bucket: 'hour', top: 10 }), [
    ...Array<string>(4).fill('(per_hour)'),
    ...Array<string>(4).fill('(per_minute)'),
  ]);
  // By minute: the series cannot come from hours; the breakdowns still do.
  assert.deepEqual(await reads({ enterprise: 'acme', from: H - 40 * HOUR, to: H, bucket: 'minute', top: 10 }), [
    ...Array<string>(2).fill('(per_hour)'),
    ...Array<string>(4).fill('(per_minute)'),
  ]);
  // A day: minutes only.
  assert.deepEqual(await reads({ enterprise: 'acme', from: H - 24 * HOUR, to: H, bucket: 'hour', top: 10 }), Array<string>(4).fill('(per_minute)'));
});

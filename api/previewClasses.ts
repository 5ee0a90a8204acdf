/**
 * Decision classes of stored events for a preview: the events a draft cannot tell apart, as one
 * GROUP BY key in ClickHouse. Two events of one class get the same verdict from the draft, so a
 * preview evaluates one representative per class (weighted by its count) instead of every row,
 * and reads a few thousand groups instead of millions of rows.
 *
 * A class is exact, not a sample: it keeps every input the draft looks at, either as stored
 * (role ids, app, category, action, and the towers, regions, OS and version when a rule tests
 * them) or, for the numeric inputs, as the interval between the draft's own thresholds that the
 * value falls in (the local minute of the week between the draft's day and window edges; the
 * bytes between its `*_over` limits). The stored verdict is part of the key, to compare with.
 */
import type { NormalizedPolicySet } from '../rules-wasm/index.js';

export interface DecisionClassPlan {
  /** The key's SQL expressions over `app_usage`, in the order of {@link ClassKey}. */
  readonly keys: readonly string[];
  /** The query parameters the expressions name. */
  readonly params: Record<string, unknown>;
}

/**
 * One class as pass 1 reads it: `[replayable, role_ids, app_name, app_category, action_name,
 * tower_id, region, os, os_version, minute class, up class, down class, total class, verdict,
 * rule_id, policy_id, severity, remediation]` (an input the draft does not test is '' or 0).
 */
export type ClassKey = [
  number,
  string,
  string,
  string,
  string,
  string,
  string,
  string,
  string,
  number,
  number,
  number,
  number,
  string,
  string,
  string,
  string,
  string,
];

const MINUTES_PER_DAY = 1440;

/** The class key of `set`'s decisions. Parameter names start with `c_`. */
export function decisionClassPlan(set: NormalizedPolicySet): DecisionClassPlan {
  const conditions = set.rules.flatMap((r) => (r.conditions === null ? [] : [r.conditions]));
  const uses = (test: (c: (typeof conditions)[number]) => boolean): boolean => conditions.some(test);
  const params: Record<string, unknown> = {};
  const limits = (name: string, values: Array<number | null>): string => {
    params[name] = [...new Set(values.filter((v): v is number => v !== null))].sort((a, b) => a - b);
    return `{${name}:Array(Float64)}`;
  };
  // Every edge at which a day or window test can flip, as minutes of the week (0 = Monday 00:00).
  const edges = new Set<number>();
  for (const c of conditions) {
    if (c.days !== null) for (let d = 1; d < 7; d++) edges.add(d * MINUTES_PER_DAY);
    if (c.window !== null) {
      for (let d = 0; d < 7; d++) {
        edges.add(d * MINUTES_PER_DAY + c.window.from);
        edges.add(d * MINUTES_PER_DAY + c.window.to);
      }
    }
  }
  let minuteClass = '0';
  if (edges.size > 0) {
    params['c_tz'] = set.timezone;
    params['c_edges'] = [...edges].sort((a, b) => a - b);
    const minute = `(toDayOfWeek(ts, 0, {c_tz:String}) - 1) * ${MINUTES_PER_DAY} + toHour(ts, {c_tz:String}) * 60 + toMinute(ts, {c_tz:String})`;
    minuteClass = `arrayCount(e -> e <= ${minute}, {c_edges:Array(UInt32)})`;
  }
  const over = (column: string, name: string, pick: (c: (typeof conditions)[number]) => number | null): string =>
    uses((c) => pick(c) !== null) ? `arrayCount(l -> ${column} > l, ${limits(name, conditions.map(pick))})` : '0';
  const keys = [
    `toUInt8(decision_inputs = 1 AND verdict != 'unregistered')`,
    'role_ids',
    'app_name',
    'app_category',
    'action_name',
    uses((c) => c.towers !== null) ? 'tower_id' : `''`,
    uses((c) => c.regions !== null) ? 'region' : `''`,
    uses((c) => c.os !== null) ? 'os' : `''`,
    uses((c) => c.osVersionAtLeast !== null || c.osVersionBelow !== null) ? 'os_version' : `''`,
    minuteClass,
    over('bytes_up', 'c_up', (c) => c.bytesUpOver),
    over('bytes_down', 'c_down', (c) => c.bytesDownOver),
    over('bytes_up + bytes_down', 'c_total', (c) => c.bytesTotalOver),
    'verdict',
    'rule_id',
    'policy_id',
    'severity',
    'remediation',
  ];
  return { keys, params };
}

/**
 * The reference evaluator: the rule semantics written as plainly as possible, one event at a
 * time, straight from the normalized policies. It shares nothing with the WASM path but the
 * normalized model, so the property tests compare two independent implementations.
 */
import type { EvalEvent } from './event.js';
import { parseOsVersion, verdictOfRank, type NormalizedConditions, type NormalizedPolicySet, type NormalizedRule, type Verdict } from './model.js';

const WEEKDAYS = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'];
const formats = new Map<string, Intl.DateTimeFormat>();

export function evaluateReference(set: NormalizedPolicySet, event: EvalEvent): Verdict {
  return verdictOfRank(set, referenceRank(set, event));
}

/** The winning rank for one event: the highest of every applicable default and matching rule. */
export function referenceRank(set: NormalizedPolicySet, event: EvalEvent): number {
  const roles = new Set(event.role_ids);
  let best = 0;
  for (const policy of set.policies) {
    if (policy.roles.some((r) => roles.has(r))) best = Math.max(best, policy.defaultRank);
    for (const rule of policy.rules) {
      if (rule.rank > best && ruleMatches(rule, roles, event, set.timezone)) best = rule.rank;
    }
  }
  return best;
}

function ruleMatches(rule: NormalizedRule, roles: ReadonlySet<string>, ev: EvalEvent, timeZone: string): boolean {
  for (const check of ruleChecks(rule, roles, ev, timeZone)) if (!check.held) return false;
  return true;
}

/** One test a rule makes of an event: what it asks for, what the event had, whether it held. */
export interface RuleCheck {
  /** `role`, `app`, `app_category`, `action`, or a condition (`days`, `window`, `towers`, …). */
  readonly test: string;
  readonly expected: unknown;
  readonly seen: unknown;
  readonly held: boolean;
}

/**
 * The tests of `rule` on `ev`, in order, each with its outcome: the rule matches when every one
 * holds. The evaluator stops at the first that fails; `explainReference` lists them all.
 */
export function* ruleChecks(rule: NormalizedRule, roles: ReadonlySet<string>, ev: EvalEvent, timeZone: string): Generator<RuleCheck> {
  yield { test: 'role', expected: rule.roles, seen: [...roles], held: rule.roles.some((r) => roles.has(r)) };
  switch (rule.app.kind) {
    case 'app':
      yield { test: 'app', expected: rule.app.key, seen: ev.app ?? null, held: ev.app === rule.app.key };
      break;
    case 'category':
      yield { test: 'app_category', expected: rule.app.category, seen: ev.app_category ?? null, held: ev.app_category === rule.app.category };
      break;
    case 'any':
      break;
  }
  if (rule.action.kind === 'action') yield { test: 'action', expected: rule.action.key, seen: ev.action ?? null, held: ev.action === rule.action.key };
  if (rule.conditions !== null) yield* conditionChecks(rule.conditions, ev, timeZone);
}

function* conditionChecks(c: NormalizedConditions, ev: EvalEvent, timeZone: string): Generator<RuleCheck> {
  if (c.days !== null || c.window !== null) {
    const local = localTime(ev.ts, timeZone);
    if (c.days !== null) {
      yield {
        test: 'days',
        expected: c.days.map((d) => WEEKDAYS[d]),
        seen: local === null ? null : WEEKDAYS[local.day],
        held: local !== null && c.days.includes(local.day),
      };
    }
    if (c.window !== null) {
      const { from, to } = c.window;
      const inside = local !== null && (from < to ? local.minute >= from && local.minute < to : local.minute >= from || local.minute < to);
      yield {
        test: 'window',
        expected: { from: clock(from), to: clock(to), timezone: timeZone },
        seen: local === null ? null : clock(local.minute),
        held: inside,
      };
    }
  }
  if (c.towers !== null)
    yield { test: 'towers', expected: c.towers, seen: ev.tower_id ?? null, held: ev.tower_id !== undefined && c.towers.includes(ev.tower_id) };
  if (c.regions !== null)
    yield { test: 'regions', expected: c.regions, seen: ev.region ?? null, held: ev.region !== undefined && c.regions.includes(ev.region) };
  if (c.os !== null) yield { test: 'os', expected: c.os, seen: ev.os ?? null, held: ev.os !== undefined && c.os.includes(ev.os.toLowerCase()) };
  if (c.osVersionAtLeast !== null || c.osVersionBelow !== null) {
    const version = ev.os_version === undefined ? null : parseOsVersion(ev.os_version);
    const seen = ev.os_version ?? null;
    if (c.osVersionAtLeast !== null)
      yield { test: 'os_version_at_least', expected: versionText(c.osVersionAtLeast), seen, held: version !== null && version >= c.osVersionAtLeast };
    if (c.osVersionBelow !== null)
      yield { test: 'os_version_below', expected: versionText(c.osVersionBelow), seen, held: version !== null && version < c.osVersionBelow };
  }
  const up = ev.bytes_up ?? 0;
  const down = ev.bytes_down ?? 0;
  if (c.bytesUpOver !== null) yield { test: 'bytes_up_over', expected: c.bytesUpOver, seen: up, held: up > c.bytesUpOver };
  if (c.bytesDownOver !== null) yield { test: 'bytes_down_over', expected: c.bytesDownOver, seen: down, held: down > c.bytesDownOver };
  if (c.bytesTotalOver !== null) yield { test: 'bytes_total_over', expected: c.bytesTotalOver, seen: up + down, held: up + down > c.bytesTotalOver };
}

/** A comparable version (parseOsVersion) as major.minor.patch. */
const versionText = (v: number): string => `${Math.floor(v / 1_000_000)}.${Math.floor(v / 1000) % 1000}.${v % 1000}`;

/** Minute of the day as HH:MM. */
const clock = (minute: number): string => `${String(Math.floor(minute / 60)).padStart(2, '0')}:${String(minute % 60).padStart(2, '0')}`;

function localTime(ts: number | undefined, timeZone: string): { day: number; minute: number } | null {
  if (ts === undefined || !Number.isFinite(ts)) return null;
  let format = formats.get(timeZone);
  if (!format) {
    format = new Intl.DateTimeFormat('en-US', { timeZone, weekday: 'short', hour: 'numeric', minute: 'numeric', hourCycle: 'h23' });
    formats.set(timeZone, format);
  }
  let day = -1;
  let hour = 0;
  let minute = 0;
  for (const part of format.formatToParts(ts)) {
    if (part.type === 'weekday') day = WEEKDAYS.indexOf(part.value);
    else if (part.type === 'hour') hour = Number(part.value);
    else if (part.type === 'minute') minute = Number(part.value);
  }
  return day < 0 ? null : { day, minute: hour * 60 + minute };
}

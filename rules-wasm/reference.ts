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
  if (!rule.roles.some((r) => roles.has(r))) return false;
  switch (rule.app.kind) {
    case 'app':
      if (ev.app !== rule.app.key) return false;
      break;
    case 'category':
      if (ev.app_category !== rule.app.category) return false;
      break;
    case 'any':
      break;
  }
  if (rule.action.kind === 'action' && ev.action !== rule.action.key) return false;
  return rule.conditions === null || conditionsHold(rule.conditions, ev, timeZone);
}

function conditionsHold(c: NormalizedConditions, ev: EvalEvent, timeZone: string): boolean {
  if (c.days !== null || c.window !== null) {
    const local = localTime(ev.ts, timeZone);
    if (local === null) return false;
    if (c.days !== null && !c.days.includes(local.day)) return false;
    if (c.window !== null) {
      const { from, to } = c.window;
      const inside = from < to ? local.minute >= from && local.minute < to : local.minute >= from || local.minute < to;
      if (!inside) return false;
    }
  }
  if (c.towers !== null && (ev.tower_id === undefined || !c.towers.includes(ev.tower_id))) return false;
  if (c.regions !== null && (ev.region === undefined || !c.regions.includes(ev.region))) return false;
  if (c.os !== null && (ev.os === undefined || !c.os.includes(ev.os.toLowerCase()))) return false;
  if (c.osVersionAtLeast !== null || c.osVersionBelow !== null) {
    const version = ev.os_version === undefined ? null : parseOsVersion(ev.os_version);
    if (version === null) return false;
    if (c.osVersionAtLeast !== null && version < c.osVersionAtLeast) return false;
    if (c.osVersionBelow !== null && version >= c.osVersionBelow) return false;
  }
  const up = ev.bytes_up ?? 0;
  const down = ev.bytes_down ?? 0;
  if (c.bytesUpOver !== null && !(up > c.bytesUpOver)) return false;
  if (c.bytesDownOver !== null && !(down > c.bytesDownOver)) return false;
  if (c.bytesTotalOver !== null && !(up + down > c.bytesTotalOver)) return false;
  return true;
}

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

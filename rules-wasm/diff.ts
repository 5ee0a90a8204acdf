/**
 * The semantic diff of two policy sets: every decision cell whose verdict, severity or
 * remediation differs, exactly, from the decision tables (decisionTable.ts) built for both over
 * one shared layout. A cell is a role × app class (a named app and/or category, or any other) ×
 * action class (a named action, or any other) × condition class (which of the conditions of the
 * cell's conditional rules hold: each combination is compared). Combinations that no event can
 * meet (two disjoint time windows at once) are compared too, so a change reported there may
 * never happen; a change that can happen is always reported.
 */
import { buildLayout, buildTables, CONDITIONAL_FLAG, type DecisionTables, type PolicyLayout } from './decisionTable.js';
import { verdictOfRank, type NormalizedConditions, type NormalizedPolicySet, type NormalizedRule, type Verdict } from './model.js';

/** Beyond this many distinct conditions in one cell, combinations are not enumerated (each alone and none are). */
export const MAX_CONDITIONS_PER_CELL = 10;

export type CellChange = 'allow_to_deny' | 'deny_to_allow' | 'severity_changed' | 'remediation_changed';

export interface ChangedCell {
  role_id: string;
  /** A named app, or null for any other app. */
  app: string | null;
  /** A named category, or null for any other category. */
  app_category: string | null;
  /** A named action, or null for any other action. */
  action: string | null;
  /** The conditions that hold in this class (each as the rule language writes it); empty: none. */
  conditions: Array<Record<string, unknown>>;
  change: CellChange;
  before: Verdict;
  after: Verdict;
}

export interface PolicyDiff {
  /** Cells compared (roles × app classes × action classes), and condition classes within them. */
  cells: number;
  condition_classes: number;
  changes: Record<CellChange, number>;
  changed: ChangedCell[];
  /** Cells whose conditions were too many to combine (compared one at a time). */
  cells_not_combined: number;
}

export interface DiffOptions {
  /**
   * The category of an app the policies name (by its key: name, else id), from the catalog: the
   * cells no event can fall in (that app in another category) are left out. Without it, every
   * combination of a named app and a named category is a cell.
   */
  appCategory?: (app: string) => string | undefined;
}

export function diffPolicySets(before: NormalizedPolicySet, after: NormalizedPolicySet, options: DiffOptions = {}): PolicyDiff {
  // One layout over both: a cell means the same events on either side.
  const layout = buildLayout({ timezone: before.timezone, policies: [...before.policies, ...after.policies], rules: [...before.rules, ...after.rules] });
  const sides = [before, after].map((set) => ({
    set,
    tables: buildTables(set, layout),
    byIndex: new Map(set.rules.map((r) => [r.index, r])),
    verdicts: new Map<number, Verdict>(),
  }));
  const verdict = (side: (typeof sides)[number], rank: number): Verdict => {
    let v = side.verdicts.get(rank);
    if (v === undefined) side.verdicts.set(rank, (v = verdictOfRank(side.set, rank)));
    return v;
  };
  const out: PolicyDiff = {
    cells: layout.roles.length === 0 ? 0 : layout.cells,
    condition_classes: 0,
    changes: { allow_to_deny: 0, deny_to_allow: 0, severity_changed: 0, remediation_changed: 0 },
    changed: [],
    cells_not_combined: 0,
  };
  const named = new Set(layout.categories);
  const possible = (where: ReturnType<typeof describeCell>): boolean => {
    const category = where.app === null ? undefined : options.appCategory?.(where.app);
    if (category === undefined) return true;
    return named.has(category) ? where.app_category === category : where.app_category === null;
  };
  for (let cell = 0; cell < out.cells; cell++) {
    const where = describeCell(layout, cell);
    if (!possible(where)) continue;
    const [a, b] = sides.map((s) => cellOf(s.tables, s.byIndex, cell)) as [CellRanks, CellRanks];
    const keys = [...new Set([...a.conditional, ...b.conditional].map((c) => c.key))].sort();
    const classes: number[][] =
      keys.length <= MAX_CONDITIONS_PER_CELL
        ? Array.from({ length: 2 ** keys.length }, (_, mask) => keys.flatMap((_, i) => ((mask >> i) & 1 ? [i] : [])))
        : [[], ...keys.map((_, i) => [i])];
    if (keys.length > MAX_CONDITIONS_PER_CELL) out.cells_not_combined++;
    for (const held of classes) {
      out.condition_classes++;
      const holding = new Set(held.map((i) => keys[i]));
      const rankA = rankWhen(a, holding);
      const rankB = rankWhen(b, holding);
      const va = verdict(sides[0]!, rankA);
      const vb = verdict(sides[1]!, rankB);
      const change = verdictChange(va, vb);
      if (change === null) continue;
      out.changes[change]++;
      const conditions = held.map((i) => conditionsOf(a, b, keys[i]!));
      out.changed.push({ ...where, conditions, change, before: va, after: vb });
    }
  }
  return out;
}

interface CellRanks {
  base: number;
  conditional: Array<{ rank: number; key: string; conditions: NormalizedConditions }>;
}

function cellOf(t: DecisionTables, byIndex: ReadonlyMap<number, NormalizedRule>, cell: number): CellRanks {
  const entry = t.base[cell] ?? 0;
  if ((entry & CONDITIONAL_FLAG) === 0) return { base: entry, conditional: [] };
  const k = (entry & ~CONDITIONAL_FLAG) >>> 0;
  const start = t.aux[k * 3 + 1] ?? 0;
  const length = t.aux[k * 3 + 2] ?? 0;
  const conditional = Array.from(t.list.subarray(start, start + length), (n) => {
    const rule = byIndex.get(t.conditionalRules[n] ?? -1) as NormalizedRule;
    return { rank: t.ranks[n] ?? 0, key: JSON.stringify(rule.conditions), conditions: rule.conditions as NormalizedConditions };
  });
  return { base: t.aux[k * 3] ?? 0, conditional };
}

function rankWhen(c: CellRanks, holding: ReadonlySet<string | undefined>): number {
  let rank = c.base;
  for (const r of c.conditional) if (r.rank > rank && holding.has(r.key)) rank = r.rank;
  return rank;
}

/** How a verdict changes from `a` to `b` (permission first, then severity, then remediation), or null. */
export function verdictChange(a: Verdict, b: Verdict): CellChange | null {
  if (a.permission !== b.permission) return a.permission === 'allow' ? 'allow_to_deny' : 'deny_to_allow';
  if (a.severity !== b.severity) return 'severity_changed';
  if (a.remediation !== b.remediation) return 'remediation_changed';
  return null;
}

function conditionsOf(a: CellRanks, b: CellRanks, key: string): Record<string, unknown> {
  const c = [...a.conditional, ...b.conditional].find((x) => x.key === key)?.conditions;
  return c === undefined ? {} : conditionsText(c);
}

const DAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];
const hhmm = (m: number): string => `${String(Math.floor(m / 60)).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`;
const version = (v: number): string => `${Math.floor(v / 1_000_000)}.${Math.floor(v / 1000) % 1000}.${v % 1000}`;

/** Normalized conditions back in the rule language's words (`when`). */
export function conditionsText(c: NormalizedConditions): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (c.days !== null) out['days'] = c.days.map((d) => DAYS[d]);
  if (c.window !== null) out['time'] = { from: hhmm(c.window.from), to: hhmm(c.window.to) };
  if (c.towers !== null) out['towers'] = c.towers;
  if (c.regions !== null) out['regions'] = c.regions;
  if (c.os !== null) out['os'] = c.os;
  if (c.osVersionAtLeast !== null) out['os_version_at_least'] = version(c.osVersionAtLeast);
  if (c.osVersionBelow !== null) out['os_version_below'] = version(c.osVersionBelow);
  if (c.bytesUpOver !== null) out['bytes_up_over'] = c.bytesUpOver;
  if (c.bytesDownOver !== null) out['bytes_down_over'] = c.bytesDownOver;
  if (c.bytesTotalOver !== null) out['bytes_total_over'] = c.bytesTotalOver;
  return out;
}

function describeCell(layout: PolicyLayout, cell: number): Pick<ChangedCell, 'role_id' | 'app' | 'app_category' | 'action'> {
  const roleStride = layout.appClasses * layout.actionClasses;
  const role = Math.floor(cell / roleStride);
  const appClass = Math.floor((cell % roleStride) / layout.actionClasses);
  const action = cell % layout.actionClasses;
  const cats = layout.categories.length + 1;
  const lit = Math.floor(appClass / cats);
  const cat = appClass % cats;
  return {
    role_id: layout.roles[role] ?? '',
    app: lit === 0 ? null : (layout.apps[lit - 1] ?? null),
    app_category: cat === 0 ? null : (layout.categories[cat - 1] ?? null),
    action: action === 0 ? null : (layout.actions[action - 1] ?? null),
  };
}

/** A diff as text for a terminal: the counts, then up to `limit` changed cells. */
export function diffText(d: PolicyDiff, limit = 50): string {
  const c = d.changes;
  const total = d.changed.length;
  const lines = [
    `${total} of ${d.condition_classes} decision classes change (${d.cells} cells): ${c.allow_to_deny} allow→deny, ${c.deny_to_allow} deny→allow, ${c.severity_changed} severity, ${c.remediation_changed} remediation`,
  ];
  const v = (x: Verdict): string =>
    [x.permission, x.severity, x.remediation].filter((s) => s !== null).join(' ') +
    ` (${x.rule_id ?? (x.policy_id === null ? 'no policy' : `default of ${x.policy_id}`)})`;
  for (const cell of d.changed.slice(0, limit)) {
    const app =
      cell.app === null && cell.app_category === null
        ? 'any other app'
        : [cell.app ?? 'other app', cell.app_category === null ? '' : `in ${cell.app_category}`].join(' ').trim();
    const when = cell.conditions.length === 0 ? '' : ` when ${cell.conditions.map((x) => JSON.stringify(x)).join(' and ')}`;
    lines.push(`  role ${cell.role_id} × ${app} × ${cell.action ?? 'any other action'}${when}: ${v(cell.before)} → ${v(cell.after)}`);
  }
  if (total > limit) lines.push(`  … and ${total - limit} more (--json for all)`);
  return `${lines.join('\n')}\n`;
}

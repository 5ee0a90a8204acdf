/**
 * Precomputes a policy set into a dense decision table so the WASM core does one load per
 * (event, role) in the common case.
 *
 * Every value an event can carry is folded into a class the policies can tell apart:
 * roles → a bit (≤ 64 roles), apps → (named app | other) × (named category | other),
 * actions → named action | other. A cell (role, app class, action class) holds the highest
 * rank of the defaults and unconditional rules that apply there. Rules with conditions
 * cannot be decided ahead; a cell that has any ranking above its base points (high bit set)
 * into `aux` = [base rank, list start, list length], and the list holds those conditional
 * rules in descending rank order, so the first one whose conditions hold wins.
 */
import { CodedError } from '../core/codedError.js';
import type { NormalizedPolicySet, NormalizedRule } from './model.js';

export const MAX_ROLES = 64;
/** 32 Mi cells = 128 MiB of table: far beyond any real enterprise, and a clear limit. */
export const MAX_CELLS = 32 * 1024 * 1024;
export const CONDITIONAL_FLAG = 0x80000000;

/** Dictionaries from an event's strings to the ids the WASM core works with (0 = other). */
export interface PolicyLayout {
  roles: string[];
  apps: string[];
  categories: string[];
  actions: string[];
  towers: string[];
  regions: string[];
  os: string[];
  /** Classes per dimension: apps = (apps + 1) × (categories + 1), actions = actions + 1. */
  appClasses: number;
  actionClasses: number;
  cells: number;
}

export interface DecisionTables {
  base: Uint32Array;
  /** Per conditional cell: base rank, start in `list`, length. */
  aux: Uint32Array;
  /** Conditional rule numbers (positions in `conditionalRules`). */
  list: Uint32Array;
  /** Rank of each conditional rule. */
  ranks: Uint32Array;
  /** Rule indices (into set.rules) of the conditional rules, in their numbering. */
  conditionalRules: number[];
}

export class PolicyLimitError extends CodedError<'too_many_roles' | 'table_too_large'> {}

export function buildLayout(set: NormalizedPolicySet): PolicyLayout {
  const roles = new Set<string>();
  const apps = new Set<string>();
  const categories = new Set<string>();
  const actions = new Set<string>();
  const towers = new Set<string>();
  const regions = new Set<string>();
  const os = new Set<string>();
  for (const p of set.policies) for (const r of p.roles) roles.add(r);
  for (const rule of set.rules) {
    for (const r of rule.roles) roles.add(r);
    if (rule.app.kind === 'app') apps.add(rule.app.key);
    if (rule.app.kind === 'category') categories.add(rule.app.category);
    if (rule.action.kind === 'action') actions.add(rule.action.key);
    rule.conditions?.towers?.forEach((t) => towers.add(t));
    rule.conditions?.regions?.forEach((t) => regions.add(t));
    rule.conditions?.os?.forEach((t) => os.add(t));
  }
  if (roles.size > MAX_ROLES) {
    throw new PolicyLimitError('too_many_roles', `the policies name ${roles.size} roles; one policy set may name at most ${MAX_ROLES}`);
  }
  const appClasses = (apps.size + 1) * (categories.size + 1);
  const actionClasses = actions.size + 1;
  const cells = Math.max(1, roles.size) * appClasses * actionClasses;
  if (cells > MAX_CELLS) {
    throw new PolicyLimitError(
      'table_too_large',
      `the policies need ${cells} decision cells (${roles.size} roles × ${apps.size} apps × ${categories.size} categories × ${actions.size} actions); the limit is ${MAX_CELLS}`,
    );
  }
  const sorted = (s: Set<string>): string[] => [...s].sort();
  return {
    roles: sorted(roles),
    apps: sorted(apps),
    categories: sorted(categories),
    actions: sorted(actions),
    towers: sorted(towers),
    regions: sorted(regions),
    os: sorted(os),
    appClasses,
    actionClasses,
    cells,
  };
}

export function buildTables(set: NormalizedPolicySet, layout: PolicyLayout): DecisionTables {
  const roleBit = indexOf(layout.roles, 0);
  const appIdx = indexOf(layout.apps, 1);
  const catIdx = indexOf(layout.categories, 1);
  const actionIdx = indexOf(layout.actions, 1);
  const cats = layout.categories.length + 1;
  const roleStride = layout.appClasses * layout.actionClasses;
  const base = new Uint32Array(layout.cells);

  for (const p of set.policies) {
    for (const role of p.roles) {
      const start = (roleBit.get(role) ?? 0) * roleStride;
      for (let c = start; c < start + roleStride; c++) if (p.defaultRank > (base[c] ?? 0)) base[c] = p.defaultRank;
    }
  }

  const visit = (rule: NormalizedRule, fn: (cell: number) => void): void => {
    const appClassList: number[] = [];
    if (rule.app.kind === 'any') for (let a = 0; a < layout.appClasses; a++) appClassList.push(a);
    else if (rule.app.kind === 'app') {
      const lit = appIdx.get(rule.app.key) ?? 0;
      for (let c = 0; c < cats; c++) appClassList.push(lit * cats + c);
    } else {
      const cat = catIdx.get(rule.app.category) ?? 0;
      for (let lit = 0; lit <= layout.apps.length; lit++) appClassList.push(lit * cats + cat);
    }
    const actionList: number[] = rule.action.kind === 'any' ? range(layout.actionClasses) : [actionIdx.get(rule.action.key) ?? 0];
    for (const role of rule.roles) {
      const roleBase = (roleBit.get(role) ?? 0) * roleStride;
      for (const a of appClassList) for (const x of actionList) fn(roleBase + a * layout.actionClasses + x);
    }
  };

  const conditional = set.rules.filter((r) => r.conditions !== null);
  for (const rule of set.rules) {
    if (rule.conditions !== null) continue;
    visit(rule, (cell) => {
      if (rule.rank > (base[cell] ?? 0)) base[cell] = rule.rank;
    });
  }

  // Only conditional rules that could beat a cell's base are worth checking there.
  const perCell = new Map<number, number[]>();
  conditional.forEach((rule, number) => {
    visit(rule, (cell) => {
      if (rule.rank <= (base[cell] ?? 0)) return;
      let list = perCell.get(cell);
      if (!list) perCell.set(cell, (list = []));
      list.push(number);
    });
  });
  const ranks = Uint32Array.from(conditional, (r) => r.rank);
  const aux = new Uint32Array(perCell.size * 3);
  const listParts: number[] = [];
  let k = 0;
  for (const [cell, numbers] of [...perCell].sort((a, b) => a[0] - b[0])) {
    numbers.sort((a, b) => (ranks[b] ?? 0) - (ranks[a] ?? 0));
    aux[k * 3] = base[cell] ?? 0;
    aux[k * 3 + 1] = listParts.length;
    aux[k * 3 + 2] = numbers.length;
    listParts.push(...numbers);
    base[cell] = (CONDITIONAL_FLAG | k) >>> 0;
    k++;
  }
  return { base, aux, list: Uint32Array.from(listParts), ranks, conditionalRules: conditional.map((r) => r.index) };
}

function indexOf(values: readonly string[], first: number): Map<string, number> {
  return new Map(values.map((v, i) => [v, i + first]));
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

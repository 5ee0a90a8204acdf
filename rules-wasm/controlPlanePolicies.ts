/**
 * Builds an enterprise's policy set in the rule language from control-plane entities, the
 * way every process does it (pipeline recompiles, simulator predicts verdicts). Apps and
 * actions named by id are resolved to their catalog names, so rules and enriched events
 * speak of the same strings.
 */
import type { Action, App, Policy, PolicyRule, RolePolicy } from '../core/domain.js';
import type { PolicyInput, RuleInput } from './language.js';

export interface EnterprisePolicySource {
  policies: readonly Policy[];
  rules: readonly PolicyRule[];
  rolePolicies: readonly RolePolicy[];
  apps: readonly App[];
  actions: readonly Action[];
}

/**
 * One PolicyInput per policy, ordered by policy id and rules by rule id: the order breaks
 * ties between equally ranked rules, so it must not depend on how the entities were listed.
 * Policies and rules in shadow mode are left out unless `shadow` (the set that says what they
 * would have done).
 */
export function enterprisePolicyInputs(source: EnterprisePolicySource, options: { shadow?: boolean } = {}): PolicyInput[] {
  // Enforced: shadow policies and rules left out. With `shadow`: everything, as if enforced.
  const counts = (mode: string | undefined): boolean => options.shadow === true || mode !== 'shadow';
  source = { ...source, policies: source.policies.filter((p) => counts(p.mode)), rules: source.rules.filter((r) => counts(r.mode)) };
  const appName = new Map(source.apps.map((a) => [a.id, a.name]));
  const actionName = new Map(source.actions.map((a) => [a.id, a.name]));
  const byId = <T extends { id: string }>(a: T, b: T): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  return [...source.policies].sort(byId).map((p): PolicyInput => ({
    policy_id: p.id,
    name: p.name,
    default_permission: p.default_permission,
    default_severity: p.default_severity,
    enabled: p.enabled,
    role_ids: source.rolePolicies
      .filter((rp) => rp.policy_id === p.id)
      .map((rp) => rp.role_id)
      .sort(),
    rules: source.rules
      .filter((r) => r.policy_id === p.id)
      .sort(byId)
      .map((r) => ruleInput(r, appName, actionName)),
  }));
}

function ruleInput(r: PolicyRule, appName: ReadonlyMap<string, string>, actionName: ReadonlyMap<string, string>): RuleInput {
  const out: RuleInput = { rule_id: r.id, permission: r.permission, enabled: r.enabled };
  if (r.role_id !== undefined) out.role_id = r.role_id;
  if (r.app_category !== undefined) out.app_category = r.app_category;
  else if (r.app_name !== undefined) out.app_name = r.app_name;
  else if (r.app_id !== undefined) {
    const name = appName.get(r.app_id);
    if (name !== undefined) out.app_name = name;
    else out.app_id = r.app_id;
  }
  if (r.action !== undefined) out.action = r.action;
  else if (r.action_id !== undefined) {
    const name = actionName.get(r.action_id);
    if (name !== undefined) out.action = name;
    else out.action_id = r.action_id;
  }
  if (r.severity !== undefined) out.severity = r.severity;
  if (r.remediation !== undefined) out.remediation = r.remediation;
  if (r.when !== undefined) out.when = r.when;
  return out;
}

/** Whether anything of the source is in shadow mode (a shadow module is worth compiling). */
export function hasShadow(source: Pick<EnterprisePolicySource, 'policies' | 'rules'>): boolean {
  return source.policies.some((p) => p.mode === 'shadow') || source.rules.some((r) => r.mode === 'shadow');
}

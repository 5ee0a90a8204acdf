/**
 * The rule language: JSON policies as authors write them (the product brief's shapes plus
 * severity, categories, wildcards, conditions and remediation), validated with errors that
 * point at the offending policy, rule and field, and normalized for the evaluators.
 */
import { z } from 'zod';
import { ID_PATTERN, PERMISSIONS, REMEDIATIONS, SEVERITIES } from '../core/domain.js';
import { CodedError } from '../core/codedError.js';
import {
  DAY_NAMES,
  MAX_INDEX,
  RANK_KIND,
  parseOsVersion,
  rankOf,
  type ActionMatcher,
  type AppMatcher,
  type NormalizedConditions,
  type NormalizedPolicy,
  type NormalizedPolicySet,
  type NormalizedRule,
} from './model.js';

const id = z.string().regex(ID_PATTERN, 'must be 1–64 letters, digits, "_" or "-"');
const name = z.string().trim().min(1, 'must not be empty').max(128, 'must be at most 128 characters');
const names = z.array(name).min(1, 'must list at least one value');
const bytes = z.number().finite().nonnegative('must be a non-negative number of bytes');

/** A rule's `when`: also what the api accepts for it, so the two cannot drift. */
export const conditionsSchema = z.strictObject({
  days: z.array(z.string()).min(1, 'must list at least one day').optional(),
  time: z.strictObject({ from: z.string(), to: z.string() }).optional(),
  towers: names.optional(),
  regions: names.optional(),
  os: names.optional(),
  os_version_at_least: z.string().optional(),
  os_version_below: z.string().optional(),
  bytes_up_over: bytes.optional(),
  bytes_down_over: bytes.optional(),
  bytes_total_over: bytes.optional(),
});

const ruleSchema = z.strictObject({
  rule_id: id.optional(),
  policy_rule_id: id.optional(),
  policy_id: id.optional(),
  enterprise_id: id.optional(),
  role_id: id.optional(),
  app_id: name.optional(),
  app_name: name.optional(),
  app_category: name.optional(),
  action_id: name.optional(),
  action: name.optional(),
  permission: z.enum(PERMISSIONS),
  severity: z.enum(SEVERITIES).optional(),
  remediation: z.enum(REMEDIATIONS).optional(),
  when: conditionsSchema.optional(),
  enabled: z.boolean().optional(),
  status: z.string().optional(),
  updated_at: z.string().optional(),
});

const policySchema = z.strictObject({
  policy_id: id,
  name,
  description: z.string().optional(),
  enterprise_id: id.optional(),
  default_permission: z.enum(PERMISSIONS).default('allow'),
  default_severity: z.enum(SEVERITIES).default('medium'),
  role_ids: z.array(id).default([]),
  timezone: z.string().optional(),
  enabled: z.boolean().default(true),
  updated_at: z.string().optional(),
  rules: z.array(ruleSchema).default([]),
});

export type RuleInput = z.input<typeof ruleSchema>;
export type PolicyInput = z.input<typeof policySchema>;
export type ConditionsInput = z.input<typeof conditionsSchema>;

export interface PolicyIssue {
  /** Where, e.g. `policies[0] (policy123).rules[2] (r7).when.time.from`. */
  path: string;
  message: string;
}

export class PolicyValidationError extends CodedError<'invalid_policy'> {
  constructor(readonly issues: readonly PolicyIssue[]) {
    super(
      'invalid_policy',
      `${issues.length} problem${issues.length === 1 ? '' : 's'} in the policy:\n` + issues.map((i) => `  ${i.path}: ${i.message}`).join('\n'),
    );
  }
}

export interface NormalizeOptions {
  /** IANA zone for time windows; overrides the policies' own `timezone`. */
  timezone?: string;
}

/**
 * Validates one policy or an array of them (as parsed from JSON) and returns the normalized
 * set. Throws PolicyValidationError listing every problem found.
 */
export function normalizePolicies(input: unknown, options: NormalizeOptions = {}): NormalizedPolicySet {
  const list = Array.isArray(input) ? input : [input];
  const issues: PolicyIssue[] = [];
  const parsed: Array<z.output<typeof policySchema>> = [];
  list.forEach((raw, i) => {
    const result = policySchema.safeParse(raw);
    if (result.success) {
      parsed.push(result.data);
      return;
    }
    for (const issue of result.error.issues) {
      const missing = issue.code === 'invalid_type' && valueAt(raw, issue.path) === undefined;
      issues.push({ path: describePath(raw, i, issue.path), message: missing ? `is required (${issue.expected})` : issueMessage(issue) });
    }
  });
  if (issues.length > 0) throw new PolicyValidationError(issues);

  const timezone = resolveTimezone(parsed, options.timezone, issues);
  const policies: NormalizedPolicy[] = [];
  const rules: NormalizedRule[] = [];
  const policyIds = new Set<string>();
  const ruleIds = new Set<string>();
  parsed.forEach((p, pi) => {
    const where = `policies[${pi}] (${p.policy_id})`;
    if (policyIds.has(p.policy_id)) issues.push({ path: `${where}.policy_id`, message: `duplicate policy id '${p.policy_id}'` });
    policyIds.add(p.policy_id);
    if (!p.enabled) return;
    const policyIndex = policies.length;
    const policy: NormalizedPolicy = {
      index: policyIndex,
      id: p.policy_id,
      name: p.name,
      roles: [...new Set(p.role_ids)],
      defaultPermission: p.default_permission,
      defaultSeverity: p.default_severity,
      defaultRank: rankOf(p.default_permission === 'deny' ? RANK_KIND.defaultDeny : RANK_KIND.defaultAllow, policyIndex),
      rules: [],
    };
    p.rules.forEach((r, ri) => {
      const ruleId = r.rule_id ?? r.policy_rule_id ?? `${p.policy_id}#${ri + 1}`;
      const at = `${where}.rules[${ri}] (${ruleId})`;
      const before = issues.length;
      if (r.rule_id !== undefined && r.policy_rule_id !== undefined && r.rule_id !== r.policy_rule_id) {
        issues.push({ path: `${at}.rule_id`, message: 'rule_id and policy_rule_id differ; give one' });
      }
      if (ruleIds.has(ruleId)) issues.push({ path: `${at}.rule_id`, message: `duplicate rule id '${ruleId}'` });
      ruleIds.add(ruleId);
      if (r.policy_id !== undefined && r.policy_id !== p.policy_id) {
        issues.push({ path: `${at}.policy_id`, message: `rule names policy '${r.policy_id}' but sits in '${p.policy_id}'` });
      }
      if (r.remediation !== undefined && r.permission !== 'deny') {
        issues.push({ path: `${at}.remediation`, message: 'a remediation only applies to deny rules' });
      }
      const app = appMatcher(r, at, issues);
      const action = actionMatcher(r, at, issues);
      const conditions = r.when ? normalizeConditions(r.when, `${at}.when`, issues) : null;
      if (issues.length > before || r.enabled === false) return;
      const index = rules.length;
      if (index > MAX_INDEX) {
        issues.push({ path: at, message: `a policy set holds at most ${MAX_INDEX + 1} rules` });
        return;
      }
      const severity = r.severity ?? 'medium';
      const rule: NormalizedRule = {
        index,
        id: ruleId,
        policyIndex,
        policyId: p.policy_id,
        roles: r.role_id !== undefined ? [r.role_id] : policy.roles,
        app,
        action,
        permission: r.permission,
        severity,
        remediation: r.remediation ?? null,
        conditions,
        rank: rankOf(r.permission === 'deny' ? RANK_KIND.deny : RANK_KIND.allow, index, severity),
      };
      rules.push(rule);
      policy.rules.push(rule);
    });
    policies.push(policy);
  });
  if (issues.length > 0) throw new PolicyValidationError(issues);
  return { timezone, policies, rules };
}

/** The app a rule or event names: its name when known, else its id. `*` means any. */
export function appKey(appName: string | undefined, appId: string | undefined): string | undefined {
  return appName ?? appId;
}

function appMatcher(r: z.output<typeof ruleSchema>, at: string, issues: PolicyIssue[]): AppMatcher {
  const given = (['app_name', 'app_id', 'app_category'] as const).filter((k) => r[k] !== undefined);
  if (given.length > 1) {
    issues.push({ path: `${at}.${given[1]}`, message: `give one of app_name, app_id, app_category (got ${given.join(', ')})` });
    return { kind: 'any' };
  }
  if (r.app_category !== undefined) return r.app_category === '*' ? { kind: 'any' } : { kind: 'category', category: r.app_category };
  const key = appKey(r.app_name, r.app_id);
  return key === undefined || key === '*' ? { kind: 'any' } : { kind: 'app', key };
}

function actionMatcher(r: z.output<typeof ruleSchema>, at: string, issues: PolicyIssue[]): ActionMatcher {
  if (r.action !== undefined && r.action_id !== undefined) {
    issues.push({ path: `${at}.action_id`, message: 'give one of action, action_id' });
    return { kind: 'any' };
  }
  const key = r.action ?? r.action_id;
  return key === undefined || key === '*' ? { kind: 'any' } : { kind: 'action', key };
}

const DAY_ALIASES: ReadonlyMap<string, number> = new Map(
  DAY_NAMES.flatMap((d, i) => [
    [d, i],
    [['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday'][i] ?? d, i],
  ]),
);

function normalizeConditions(c: ConditionsInput, at: string, issues: PolicyIssue[]): NormalizedConditions | null {
  const days = c.days?.map((d, i) => {
    const day = DAY_ALIASES.get(d.trim().toLowerCase());
    if (day === undefined) issues.push({ path: `${at}.days[${i}]`, message: `unknown day '${d}' (use mon, tue, wed, thu, fri, sat, sun)` });
    return day ?? 0;
  });
  let window: NormalizedConditions['window'] = null;
  if (c.time) {
    const from = parseClock(c.time.from, `${at}.time.from`, issues);
    const to = parseClock(c.time.to, `${at}.time.to`, issues);
    if (from !== null && to !== null) {
      if (from === to) issues.push({ path: `${at}.time`, message: 'from and to are equal: the window would be empty' });
      window = { from, to };
    }
  }
  const version = (text: string | undefined, field: string): number | null => {
    if (text === undefined) return null;
    const v = parseOsVersion(text);
    if (v === null) issues.push({ path: `${at}.${field}`, message: `'${text}' is not a version like 16 or 17.4.1` });
    return v;
  };
  const out: NormalizedConditions = {
    days: days ? [...new Set(days)].sort((a, b) => a - b) : null,
    window,
    towers: c.towers ? [...new Set(c.towers)] : null,
    regions: c.regions ? [...new Set(c.regions)] : null,
    os: c.os ? [...new Set(c.os.map((o) => o.toLowerCase()))] : null,
    osVersionAtLeast: version(c.os_version_at_least, 'os_version_at_least'),
    osVersionBelow: version(c.os_version_below, 'os_version_below'),
    bytesUpOver: c.bytes_up_over ?? null,
    bytesDownOver: c.bytes_down_over ?? null,
    bytesTotalOver: c.bytes_total_over ?? null,
  };
  return Object.values(out).every((v) => v === null) ? null : out;
}

function parseClock(text: string, at: string, issues: PolicyIssue[]): number | null {
  const m = /^(\d{1,2}):(\d{2})$/.exec(text.trim());
  const minutes = m ? Number(m[1]) * 60 + Number(m[2]) : NaN;
  if (!m || Number(m[2]) > 59 || minutes > 24 * 60) {
    issues.push({ path: at, message: `'${text}' is not a time of day HH:MM between 00:00 and 24:00` });
    return null;
  }
  return minutes;
}

function resolveTimezone(policies: ReadonlyArray<{ timezone?: string | undefined }>, override: string | undefined, issues: PolicyIssue[]): string {
  const zones = [...new Set(policies.flatMap((p) => (p.timezone ? [p.timezone] : [])))];
  if (override === undefined && zones.length > 1) {
    issues.push({ path: 'timezone', message: `policies name different time zones (${zones.join(', ')}); one enterprise has one` });
  }
  const zone = override ?? zones[0] ?? 'UTC';
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
  } catch {
    issues.push({ path: 'timezone', message: `'${zone}' is not an IANA time zone (e.g. America/New_York)` });
  }
  return zone;
}

function describePath(raw: unknown, policyIndex: number, path: readonly PropertyKey[]): string {
  let out = `policies[${policyIndex}]`;
  const policyId = pick(raw, 'policy_id');
  if (typeof policyId === 'string') out += ` (${policyId})`;
  let node: unknown = raw;
  path.forEach((key, i) => {
    node = pick(node, key);
    if (typeof key === 'number') {
      out += `[${key}]`;
      const ruleId = path[i - 1] === 'rules' ? (pick(node, 'rule_id') ?? pick(node, 'policy_rule_id')) : undefined;
      if (typeof ruleId === 'string') out += ` (${ruleId})`;
    } else {
      out += `.${String(key)}`;
    }
  });
  return out;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  return path.reduce<unknown>((node, key) => pick(node, key), root);
}

function pick(node: unknown, key: PropertyKey): unknown {
  return node !== null && typeof node === 'object' ? (node as Record<PropertyKey, unknown>)[key] : undefined;
}

function issueMessage(issue: z.core.$ZodIssue): string {
  if (issue.code === 'unrecognized_keys') return `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `'${k}'`).join(', ')}`;
  if (issue.code === 'invalid_value') return `must be one of ${issue.values.map((v) => `'${String(v)}'`).join(', ')}`;
  if (issue.code === 'invalid_type') return `expected ${issue.expected}`;
  return issue.message;
}

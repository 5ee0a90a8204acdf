/**
 * The normalized policy model both evaluators work from, and the verdict ranking that
 * makes precedence a single `max`: every candidate outcome of an event is a u32 rank,
 * and the highest rank decides.
 *
 *   bits 28..30  kind      4 explicit deny > 3 explicit allow > 2 default deny > 1 default allow
 *   bits 24..26  severity  (denies only) critical 4 > high 3 > medium 2 > low 1
 *   bits  0..23  0xFFFFFF − index of the rule (or policy), so the earlier one wins a tie
 *
 * Rank 0 means no policy of the event's roles covers it: allowed.
 */
import type { Permission, Remediation, Severity } from '../core/domain.js';

export const RANK_KIND = { none: 0, defaultAllow: 1, defaultDeny: 2, allow: 3, deny: 4 } as const;
export type RankKind = (typeof RANK_KIND)[keyof typeof RANK_KIND];

export const SEVERITY_LEVEL: Readonly<Record<Severity, number>> = { low: 1, medium: 2, high: 3, critical: 4 };
const LEVEL_SEVERITY: readonly (Severity | null)[] = [null, 'low', 'medium', 'high', 'critical'];

/** Most rules (or policies) one policy set may hold: the index field of a rank. */
export const MAX_INDEX = 0xffffff;

export function rankOf(kind: RankKind, index: number, severity: Severity | null = null): number {
  const sev = kind === RANK_KIND.deny && severity !== null ? SEVERITY_LEVEL[severity] : 0;
  return ((kind << 28) | (sev << 24) | (MAX_INDEX - index)) >>> 0;
}

export function rankKind(rank: number): RankKind {
  return ((rank >>> 28) & 0x7) as RankKind;
}

export function rankIndex(rank: number): number {
  return MAX_INDEX - (rank & MAX_INDEX);
}

export function rankSeverity(rank: number): Severity | null {
  return LEVEL_SEVERITY[(rank >>> 24) & 0x7] ?? null;
}

/** What matches an app: anything, one app (by name, or by id when no name is known), or a category. */
export type AppMatcher = { kind: 'any' } | { kind: 'app'; key: string } | { kind: 'category'; category: string };
export type ActionMatcher = { kind: 'any' } | { kind: 'action'; key: string };

/** Conditions after validation: times in minutes, versions as comparable integers. */
export interface NormalizedConditions {
  /** Local days, 0 = Monday … 6 = Sunday. */
  days: number[] | null;
  /** Local minute-of-day window [from, to); from > to wraps past midnight. */
  window: { from: number; to: number } | null;
  towers: string[] | null;
  regions: string[] | null;
  /** Lower-cased OS names. */
  os: string[] | null;
  osVersionAtLeast: number | null;
  osVersionBelow: number | null;
  bytesUpOver: number | null;
  bytesDownOver: number | null;
  bytesTotalOver: number | null;
}

export interface NormalizedRule {
  /** Position in the policy set, across all policies: breaks ties (earlier wins). */
  index: number;
  id: string;
  policyIndex: number;
  policyId: string;
  /** Roles the rule applies to: its own role_id, else the policy's roles. */
  roles: string[];
  app: AppMatcher;
  action: ActionMatcher;
  permission: Permission;
  severity: Severity;
  remediation: Remediation | null;
  conditions: NormalizedConditions | null;
  rank: number;
}

export interface NormalizedPolicy {
  index: number;
  id: string;
  name: string;
  roles: string[];
  defaultPermission: Permission;
  defaultSeverity: Severity;
  defaultRank: number;
  rules: NormalizedRule[];
}

export interface NormalizedPolicySet {
  /** IANA zone for time-window conditions. */
  timezone: string;
  policies: NormalizedPolicy[];
  /** Enabled rules of every policy, in index order. */
  rules: NormalizedRule[];
}

/** What a policy decided for one event. The `rules eval` output contract. */
export interface Verdict {
  permission: Permission;
  rule_id: string | null;
  policy_id: string | null;
  severity: Severity | null;
  remediation: Remediation | null;
}

export const NO_POLICY_VERDICT: Readonly<Verdict> = Object.freeze({
  permission: 'allow',
  rule_id: null,
  policy_id: null,
  severity: null,
  remediation: null,
});

/** Turns a winning rank back into the verdict it stands for. */
export function verdictOfRank(set: NormalizedPolicySet, rank: number): Verdict {
  const kind = rankKind(rank);
  const index = rankIndex(rank);
  switch (kind) {
    case RANK_KIND.none:
      return NO_POLICY_VERDICT;
    case RANK_KIND.deny:
    case RANK_KIND.allow: {
      const rule = set.rules[index];
      if (!rule) throw new RangeError(`rank ${rank} names rule index ${index}, which does not exist`);
      const deny = kind === RANK_KIND.deny;
      return {
        permission: rule.permission,
        rule_id: rule.id,
        policy_id: rule.policyId,
        severity: deny ? rule.severity : null,
        remediation: deny ? rule.remediation : null,
      };
    }
    case RANK_KIND.defaultDeny:
    case RANK_KIND.defaultAllow: {
      const policy = set.policies[index];
      if (!policy) throw new RangeError(`rank ${rank} names policy index ${index}, which does not exist`);
      const deny = kind === RANK_KIND.defaultDeny;
      return {
        permission: deny ? 'deny' : 'allow',
        rule_id: null,
        policy_id: policy.id,
        severity: deny ? policy.defaultSeverity : null,
        remediation: null,
      };
    }
  }
}

/** "17.4.1" → 17004001. Each part is capped at 999; returns null when it does not parse. */
export function parseOsVersion(text: string): number | null {
  const m = /^\s*(\d{1,4})(?:\.(\d{1,6}))?(?:\.(\d{1,6}))?/.exec(text);
  if (!m) return null;
  const part = (s: string | undefined): number => Math.min(999, s === undefined ? 0 : Number(s));
  const major = Math.min(4000, Number(m[1]));
  return major * 1_000_000 + part(m[2]) * 1000 + part(m[3]);
}

export const DAY_NAMES = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const;

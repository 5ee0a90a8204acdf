/**
 * Why a verdict: the reference evaluator's decision for one event, laid open. The deciding
 * rule (or policy default) with the tests that held and the values seen; every other candidate
 * that matched and why it lost (precedence: an explicit deny over an explicit allow over a
 * policy's default deny over its default allow; among denies the higher severity; then the
 * earlier rule); and the rules of the event's policies that did not match, with the first test
 * that failed. Built on the same checks the reference evaluator runs (reference.ts), and its
 * verdict is the evaluator's.
 */
import type { EvalEvent } from './event.js';
import {
  RANK_KIND,
  rankKind,
  rankSeverity,
  verdictOfRank,
  type NormalizedPolicy,
  type NormalizedPolicySet,
  type NormalizedRule,
  type RankKind,
  type Verdict,
} from './model.js';
import { referenceRank, ruleChecks, type RuleCheck } from './reference.js';

export interface Candidate {
  /** `rule`, or `policy_default` (a policy's default for the roles it covers). */
  kind: 'rule' | 'policy_default';
  rule_id: string | null;
  policy_id: string;
  permission: 'allow' | 'deny';
  severity: string | null;
  remediation: string | null;
  /** The precedence rank (higher wins). */
  rank: number;
  /** The tests made, in order (a policy default tests the role only). */
  checks: RuleCheck[];
}

export interface BeatenCandidate extends Candidate {
  /** Why the deciding candidate wins over this one. */
  lost_because: string;
}

export interface NotMatching extends Candidate {
  /** The first test that failed. */
  failed: RuleCheck;
}

export interface Explanation {
  verdict: Verdict;
  /** Null when no policy of the event's roles covers it (allowed by no rule). */
  deciding: Candidate | null;
  /** Candidates that matched too, best first, each with why it lost. */
  beaten: BeatenCandidate[];
  /** Rules of the event's roles' policies that did not match. */
  not_matching: NotMatching[];
}

const KIND_NAME: Readonly<Record<RankKind, string>> = {
  [RANK_KIND.none]: 'no policy',
  [RANK_KIND.defaultAllow]: "a policy's default allow",
  [RANK_KIND.defaultDeny]: "a policy's default deny",
  [RANK_KIND.allow]: 'an explicit allow',
  [RANK_KIND.deny]: 'an explicit deny',
};

export function explainReference(set: NormalizedPolicySet, event: EvalEvent): Explanation {
  const roles = new Set(event.role_ids);
  const matched: Candidate[] = [];
  const notMatching: NotMatching[] = [];
  for (const policy of set.policies) {
    const covers = policy.roles.some((r) => roles.has(r));
    if (covers) matched.push(defaultCandidate(policy, roles));
    for (const rule of policy.rules) {
      const checks = [...ruleChecks(rule, roles, event, set.timezone)];
      const failed = checks.find((c) => !c.held);
      const candidate = ruleCandidate(rule, checks);
      if (failed === undefined) matched.push(candidate);
      // Rules of policies the event's roles have nothing to do with are noise.
      else if (covers || rule.roles.some((r) => roles.has(r))) notMatching.push({ ...candidate, failed });
    }
  }
  matched.sort((a, b) => b.rank - a.rank);
  const rank = referenceRank(set, event);
  const [deciding = null, ...rest] = matched;
  if ((deciding?.rank ?? 0) !== rank) throw new Error(`explain disagrees with the reference evaluator: rank ${deciding?.rank ?? 0} vs ${rank}`);
  return {
    verdict: verdictOfRank(set, rank),
    deciding,
    beaten: deciding === null ? [] : rest.map((c) => ({ ...c, lost_because: whyBeaten(deciding, c) })),
    not_matching: notMatching,
  };
}

function defaultCandidate(policy: NormalizedPolicy, roles: ReadonlySet<string>): Candidate {
  const deny = policy.defaultPermission === 'deny';
  return {
    kind: 'policy_default',
    rule_id: null,
    policy_id: policy.id,
    permission: policy.defaultPermission,
    severity: deny ? policy.defaultSeverity : null,
    remediation: null,
    rank: policy.defaultRank,
    checks: [{ test: 'role', expected: policy.roles, seen: [...roles], held: true }],
  };
}

function ruleCandidate(rule: NormalizedRule, checks: RuleCheck[]): Candidate {
  const deny = rule.permission === 'deny';
  return {
    kind: 'rule',
    rule_id: rule.id,
    policy_id: rule.policyId,
    permission: rule.permission,
    severity: deny ? rule.severity : null,
    remediation: deny ? rule.remediation : null,
    rank: rule.rank,
    checks,
  };
}

function whyBeaten(winner: Candidate, loser: Candidate): string {
  const wk = rankKind(winner.rank);
  const lk = rankKind(loser.rank);
  if (wk !== lk) return `${KIND_NAME[wk]} wins over ${KIND_NAME[lk]}`;
  const ws = rankSeverity(winner.rank);
  const ls = rankSeverity(loser.rank);
  if (ws !== ls) return `a ${ws ?? 'no-severity'} deny wins over a ${ls ?? 'no-severity'} one`;
  return `equal precedence: the earlier ${winner.kind === 'rule' ? 'rule' : 'policy'} (${winner.rule_id ?? winner.policy_id}) wins`;
}

/** An explanation as lines of text, for a terminal. */
export function explanationText(x: Explanation): string {
  const out: string[] = [];
  const v = x.verdict;
  const who = (c: Candidate): string => (c.kind === 'rule' ? `rule ${c.rule_id ?? ''} (policy ${c.policy_id})` : `the default of policy ${c.policy_id}`);
  const what = (c: Candidate): string => [c.permission, c.severity, c.remediation].filter((s) => s !== null).join(', ');
  const value = (u: unknown): string =>
    u === null || u === undefined ? 'nothing' : Array.isArray(u) ? `[${u.join(', ')}]` : typeof u === 'object' ? JSON.stringify(u) : String(u);
  const check = (c: RuleCheck): string => `${c.held ? '✓' : '✗'} ${c.test}: needs ${value(c.expected)}, event has ${value(c.seen)}`;
  if (x.deciding === null) {
    out.push(`verdict: ${v.permission} — no policy of the event's roles covers it`);
  } else {
    out.push(`verdict: ${what(x.deciding)}, decided by ${who(x.deciding)}`);
    for (const c of x.deciding.checks) out.push(`  ${check(c)}`);
  }
  if (x.beaten.length > 0) {
    out.push('also matched, and lost:');
    for (const b of x.beaten) out.push(`  - ${who(b)}: ${what(b)} — ${b.lost_because}`);
  }
  if (x.not_matching.length > 0) {
    out.push('did not match:');
    for (const n of x.not_matching) out.push(`  - ${who(n)}: ${check(n.failed)}`);
  }
  return `${out.join('\n')}\n`;
}

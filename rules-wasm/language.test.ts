import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { normalizePolicies, PolicyValidationError } from './language.js';
import { RANK_KIND, rankKind, rankSeverity } from './model.js';

function issuesOf(input: unknown, options = {}): string[] {
  try {
    normalizePolicies(input, options);
  } catch (err) {
    assert.ok(err instanceof PolicyValidationError, `expected PolicyValidationError, got ${String(err)}`);
    return err.issues.map((i) => `${i.path}: ${i.message}`);
  }
  assert.fail('expected the policy to be rejected');
}

describe('rule language', () => {
  it('accepts the brief shapes and fills defaults', () => {
    const set = normalizePolicies({
      policy_id: 'policy123',
      name: 'Admin Policy',
      role_ids: ['role123'],
      rules: [
        { app_name: 'Slack', action: 'Upload File', permission: 'deny' },
        { policy_id: 'policy123', role_id: 'role456', app_id: 'app123', action_id: 'action789', permission: 'allow', policy_rule_id: 'rule123' },
      ],
    });
    assert.equal(set.timezone, 'UTC');
    assert.equal(set.policies.length, 1);
    const [deny, allow] = set.rules;
    assert.ok(deny && allow);
    assert.equal(deny.id, 'policy123#1');
    assert.deepEqual(deny.roles, ['role123']);
    assert.deepEqual(deny.app, { kind: 'app', key: 'Slack' });
    assert.equal(deny.severity, 'medium');
    assert.equal(rankKind(deny.rank), RANK_KIND.deny);
    assert.equal(rankSeverity(deny.rank), 'medium');
    assert.equal(allow.id, 'rule123');
    assert.deepEqual(allow.roles, ['role456'], 'a rule with role_id applies to that role only');
    assert.deepEqual(allow.action, { kind: 'action', key: 'action789' });
    assert.equal(set.policies[0]?.defaultPermission, 'allow');
  });

  it('treats * and missing app or action as wildcards', () => {
    const set = normalizePolicies({ policy_id: 'p', name: 'P', rules: [{ app_name: '*', action: '*', permission: 'deny' }, { permission: 'allow' }] });
    for (const r of set.rules) {
      assert.deepEqual(r.app, { kind: 'any' });
      assert.deepEqual(r.action, { kind: 'any' });
    }
  });

  it('skips disabled policies and rules without using up an index', () => {
    const set = normalizePolicies([
      { policy_id: 'off', name: 'Off', enabled: false, rules: [{ permission: 'deny' }] },
      {
        policy_id: 'on',
        name: 'On',
        rules: [
          { permission: 'deny', enabled: false },
          { permission: 'allow', rule_id: 'kept' },
        ],
      },
    ]);
    assert.deepEqual(
      set.policies.map((p) => [p.id, p.index]),
      [['on', 0]],
    );
    assert.deepEqual(
      set.rules.map((r) => [r.id, r.index]),
      [['kept', 0]],
    );
  });

  it('normalizes conditions', () => {
    const set = normalizePolicies({
      policy_id: 'p',
      name: 'P',
      timezone: 'America/New_York',
      rules: [
        {
          app_category: 'social',
          permission: 'deny',
          when: { days: ['Fri', 'monday', 'mon'], time: { from: '22:30', to: '06:00' }, os: ['iOS'], os_version_below: '16.4', bytes_total_over: 10 },
        },
      ],
    });
    assert.equal(set.timezone, 'America/New_York');
    const c = set.rules[0]?.conditions;
    assert.ok(c);
    assert.deepEqual(c.days, [0, 4]);
    assert.deepEqual(c.window, { from: 22 * 60 + 30, to: 360 });
    assert.deepEqual(c.os, ['ios']);
    assert.equal(c.osVersionBelow, 16_004_000);
    assert.equal(c.bytesTotalOver, 10);
    assert.equal(normalizePolicies({ policy_id: 'p', name: 'P', rules: [{ permission: 'deny', when: {} }] }).rules[0]?.conditions, null);
  });

  it('points at the policy, rule and field of each schema error', () => {
    const issues = issuesOf([
      { policy_id: 'ok', name: 'Fine', rules: [] },
      { policy_id: 'p2', name: 'P2', rules: [{ rule_id: 'r9', app_name: 'Slack', permission: 'block', colour: 'red' }] },
    ]);
    assert.deepEqual(issues, [
      "policies[1] (p2).rules[0] (r9).permission: must be one of 'allow', 'deny'",
      "policies[1] (p2).rules[0] (r9): unknown field 'colour'",
    ]);
    assert.match(issuesOf({ name: 'x' }).join('\n'), /policies\[0\]\.policy_id: is required \(string\)/);
    assert.match(issuesOf({ policy_id: 'has space', name: 'x' }).join('\n'), /policy_id: must be 1–64 letters/);
  });

  it('reports semantic errors with their rule', () => {
    const issues = issuesOf({
      policy_id: 'p',
      name: 'P',
      rules: [
        { rule_id: 'a', app_name: 'Slack', app_category: 'messaging', permission: 'deny' },
        { rule_id: 'b', permission: 'allow', remediation: 'block_app' },
        { rule_id: 'c', permission: 'deny', when: { time: { from: '25:00', to: '10:00' }, days: ['funday'] } },
        { rule_id: 'd', permission: 'deny', when: { time: { from: '10:00', to: '10:00' } } },
        { rule_id: 'd', permission: 'deny', when: { os_version_below: 'latest' } },
        { rule_id: 'e', policy_id: 'other', permission: 'deny', action: 'x', action_id: 'y' },
      ],
    });
    assert.deepEqual(issues, [
      'policies[0] (p).rules[0] (a).app_category: give one of app_name, app_id, app_category (got app_name, app_category)',
      'policies[0] (p).rules[1] (b).remediation: a remediation only applies to deny rules',
      "policies[0] (p).rules[2] (c).when.days[0]: unknown day 'funday' (use mon, tue, wed, thu, fri, sat, sun)",
      "policies[0] (p).rules[2] (c).when.time.from: '25:00' is not a time of day HH:MM between 00:00 and 24:00",
      'policies[0] (p).rules[3] (d).when.time: from and to are equal: the window would be empty',
      "policies[0] (p).rules[4] (d).rule_id: duplicate rule id 'd'",
      "policies[0] (p).rules[4] (d).when.os_version_below: 'latest' is not a version like 16 or 17.4.1",
      "policies[0] (p).rules[5] (e).policy_id: rule names policy 'other' but sits in 'p'",
      'policies[0] (p).rules[5] (e).action_id: give one of action, action_id',
    ]);
  });

  it('rejects duplicate policies and bad or conflicting time zones', () => {
    assert.deepEqual(
      issuesOf([
        { policy_id: 'p', name: 'A' },
        { policy_id: 'p', name: 'B' },
      ]),
      ["policies[1] (p).policy_id: duplicate policy id 'p'"],
    );
    assert.deepEqual(issuesOf({ policy_id: 'p', name: 'A' }, { timezone: 'Mars/Olympus' }), [
      "timezone: 'Mars/Olympus' is not an IANA time zone (e.g. America/New_York)",
    ]);
    assert.match(
      issuesOf([
        { policy_id: 'a', name: 'A', timezone: 'UTC' },
        { policy_id: 'b', name: 'B', timezone: 'Asia/Tokyo' },
      ]).join(),
      /different time zones \(UTC, Asia\/Tokyo\)/,
    );
    assert.equal(
      normalizePolicies(
        [
          { policy_id: 'a', name: 'A', timezone: 'UTC' },
          { policy_id: 'b', name: 'B', timezone: 'Asia/Tokyo' },
        ],
        { timezone: 'Europe/Paris' },
      ).timezone,
      'Europe/Paris',
    );
  });

  it('error message lists every issue', () => {
    try {
      normalizePolicies({ policy_id: 'p', name: 'P', rules: [{ permission: 'maybe' }] });
      assert.fail('expected rejection');
    } catch (err) {
      assert.ok(err instanceof PolicyValidationError);
      assert.equal(err.code, 'invalid_policy');
      assert.equal(err.message, "1 problem in the policy:\n  policies[0] (p).rules[0].permission: must be one of 'allow', 'deny'");
    }
  });
});

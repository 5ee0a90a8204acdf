/**
 * Property test: for random policy sets and random events, the compiled WASM core and the
 * reference evaluator give the same verdict. Values come from small universes so rules and
 * events collide often; times sit on quarter hours so window edges are hit; byte counts sit on
 * thresholds ± 1; zones include half- and quarter-hour offsets and DST changes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { compilePolicies } from './compiler.js';
import type { EvalEvent } from './event.js';
import type { ConditionsInput, PolicyInput, RuleInput } from './language.js';
import { PolicyModule } from './policyModule.js';
import { evaluateReference } from './reference.js';

const ROLES = ['r1', 'r2', 'r3', 'r4', 'r5'];
const APPS = ['Slack', 'Zoom', 'TikTok', 'Dropbox', 'GitHub', 'Netflix'];
const CATEGORIES = ['messaging', 'social', 'file_sharing'];
const ACTIONS = ['Upload File', 'Start Meeting', 'Post', 'Download File'];
const TOWERS = ['t1', 't2', 't3', 't4'];
const REGIONS = ['east', 'west', 'central'];
const OS = ['iOS', 'Android', 'Windows'];
const VERSIONS = ['15', '15.4', '16', '16.0.1', '17.2', '10', '14.9.9'];
const BYTES = [0, 1000, 1_000_000, 50_000_000];
const ZONES = ['UTC', 'America/New_York', 'Asia/Kolkata', 'Asia/Kathmandu', 'Australia/Lord_Howe', 'Europe/London'];
const DAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];
// 2026: US DST ends Nov 1, starts Mar 8; Lord Howe shifts by 30 minutes in April and October.
const TIME_ORIGINS = ['2026-03-07T00:00:00Z', '2026-10-31T00:00:00Z', '2026-04-04T00:00:00Z', '2026-11-23T00:00:00Z'].map(Date.parse);

const POLICY_SETS = 24;
const EVENTS_PER_SET = 450;

const clock = fc.integer({ min: 0, max: 96 }).map((q) => `${String(Math.floor(q / 4)).padStart(2, '0')}:${String((q % 4) * 15).padStart(2, '0')}`);
const subset = <T>(values: readonly T[]): fc.Arbitrary<T[]> => fc.subarray([...values], { minLength: 1 });

const conditions: fc.Arbitrary<ConditionsInput> = fc.record(
  {
    days: subset(DAYS),
    time: fc
      .tuple(clock, clock)
      .filter(([a, b]) => a !== b)
      .map(([from, to]) => ({ from, to })),
    towers: subset(TOWERS),
    regions: subset(REGIONS),
    os: subset(OS),
    os_version_at_least: fc.constantFrom(...VERSIONS),
    os_version_below: fc.constantFrom(...VERSIONS),
    bytes_up_over: fc.constantFrom(...BYTES),
    bytes_down_over: fc.constantFrom(...BYTES),
    bytes_total_over: fc.constantFrom(...BYTES),
  },
  { requiredKeys: [] },
);

const rule: fc.Arbitrary<RuleInput> = fc
  .record(
    {
      role_id: fc.constantFrom(...ROLES),
      app: fc.oneof(
        fc.constant({}),
        fc.constant({ app_name: '*' }),
        fc.constantFrom(...APPS).map((app_name) => ({ app_name })),
        fc.constantFrom(...CATEGORIES).map((app_category) => ({ app_category })),
      ),
      action: fc.oneof(
        fc.constant({}),
        fc.constant({ action: '*' }),
        fc.constantFrom(...ACTIONS).map((action) => ({ action })),
      ),
      permission: fc.constantFrom('allow', 'deny'),
      severity: fc.constantFrom('low', 'medium', 'high', 'critical'),
      remediation: fc.constantFrom('notify', 'block_app', 'block_device'),
      when: conditions,
      enabled: fc.boolean(),
    },
    { requiredKeys: ['app', 'action', 'permission'] },
  )
  .map(({ app, action, remediation, ...r }) => ({
    ...r,
    ...app,
    ...action,
    ...(remediation !== undefined && r.permission === 'deny' ? { remediation } : {}),
  }));

const policySet = fc
  .array(
    fc.record({
      role_ids: fc.subarray(ROLES),
      default_permission: fc.constantFrom('allow', 'deny'),
      default_severity: fc.constantFrom('low', 'medium', 'high', 'critical'),
      enabled: fc.integer({ min: 0, max: 9 }).map((n) => n > 0),
      rules: fc.array(rule, { maxLength: 10 }),
    }),
    { minLength: 0, maxLength: 4 },
  )
  .map((policies) => policies.map((p, i): PolicyInput => ({ ...p, policy_id: `p${i}`, name: `Policy ${i}` })));

const event: fc.Arbitrary<EvalEvent> = fc.record({
  role_ids: fc.subarray([...ROLES, 'stranger'], { maxLength: 3 }),
  app: fc.option(fc.constantFrom(...APPS, 'Unlisted'), { nil: undefined }),
  app_category: fc.option(fc.constantFrom(...CATEGORIES, 'other'), { nil: undefined }),
  action: fc.option(fc.constantFrom(...ACTIONS, 'Other Action'), { nil: undefined }),
  tower_id: fc.option(fc.constantFrom(...TOWERS, 't9'), { nil: undefined }),
  region: fc.option(fc.constantFrom(...REGIONS, 'north'), { nil: undefined }),
  os: fc.option(fc.constantFrom(...OS, 'ios', 'ANDROID', 'Symbian'), { nil: undefined }),
  os_version: fc.option(fc.constantFrom(...VERSIONS, '16.0', 'beta', '17'), { nil: undefined }),
  ts: fc.option(
    fc
      .tuple(fc.constantFrom(...TIME_ORIGINS), fc.integer({ min: 0, max: 8 * 96 }), fc.constantFrom(0, 0, 0, -1, 1, 59_999))
      .map(([origin, q, jitter]) => origin + q * 15 * 60_000 + jitter),
    { nil: undefined },
  ),
  bytes_up: fc.option(
    fc.tuple(fc.constantFrom(...BYTES), fc.constantFrom(-1, 0, 1)).map(([b, d]) => Math.max(0, b + d)),
    { nil: undefined },
  ),
  bytes_down: fc.option(
    fc.tuple(fc.constantFrom(...BYTES), fc.constantFrom(-1, 0, 1)).map(([b, d]) => Math.max(0, b + d)),
    { nil: undefined },
  ),
});

describe('WASM core agrees with the reference evaluator', () => {
  it(`on ${POLICY_SETS} random policy sets × ${EVENTS_PER_SET} random events`, { timeout: 600_000 }, async () => {
    let compared = 0;
    await fc.assert(
      fc.asyncProperty(
        policySet,
        fc.constantFrom(...ZONES),
        fc.array(event, { minLength: EVENTS_PER_SET, maxLength: EVENTS_PER_SET }),
        async (policies, timezone, events) => {
          const compiled = await compilePolicies(policies, { timezone });
          const module = await PolicyModule.instantiate(compiled, 64);
          const wasm = module.evaluateEvents(events);
          events.forEach((e, i) => {
            assert.deepEqual(wasm[i], evaluateReference(compiled.set, e), `event ${i}: ${JSON.stringify(e)}`);
          });
          compared += events.length;
        },
      ),
      { numRuns: POLICY_SETS, endOnFailure: true },
    );
    assert.ok(compared >= 10_000, `compared ${compared} events`);
  });

  it('on the edge cases: empty policy set, empty policy, all-wildcard, overlapping allow and deny', async () => {
    const events = fc.sample(event, { numRuns: 500, seed: 42 });
    const edgeSets: PolicyInput[][] = [
      [],
      [{ policy_id: 'empty', name: 'Empty', role_ids: ['r1'] }],
      [{ policy_id: 'deny-all', name: 'Deny all', role_ids: ROLES, default_permission: 'deny' }],
      [{ policy_id: 'wild', name: 'Wild', role_ids: ROLES, rules: [{ app_name: '*', action: '*', permission: 'deny', severity: 'high' }] }],
      [
        { policy_id: 'allow', name: 'Allow', role_ids: ['r1', 'r2'], rules: [{ app_name: 'Slack', permission: 'allow' }, { permission: 'allow' }] },
        {
          policy_id: 'deny',
          name: 'Deny',
          role_ids: ['r2', 'r3'],
          rules: [
            { app_name: 'Slack', permission: 'deny', severity: 'low' },
            { app_category: 'messaging', permission: 'deny', severity: 'critical' },
          ],
        },
      ],
      [
        {
          policy_id: 'night',
          name: 'Night',
          role_ids: ROLES,
          timezone: 'Asia/Kathmandu',
          rules: [{ permission: 'deny', when: { time: { from: '22:00', to: '06:15' }, days: ['sat', 'sun'] } }],
        },
      ],
    ];
    let denied = 0;
    for (const policies of edgeSets) {
      const compiled = await compilePolicies(policies);
      const module = await PolicyModule.instantiate(compiled);
      module.evaluateEvents(events).forEach((v, i) => {
        assert.deepEqual(v, evaluateReference(compiled.set, events[i] as EvalEvent), `${policies.map((p) => p.policy_id).join('+')}, event ${i}`);
        if (v.permission === 'deny') denied++;
      });
    }
    assert.ok(denied > 0, 'some edge-case verdicts are denials');
  });
});

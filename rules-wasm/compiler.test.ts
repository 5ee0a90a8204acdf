import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { compilePolicies, PolicyCompileError } from './compiler.js';
import { PolicyCompilerService } from './compilerService.js';
import type { EvalEvent } from './event.js';
import type { PolicyInput } from './language.js';
import { PolicyModule } from './policyModule.js';
import { evaluateReference } from './reference.js';

const BRIEF_POLICIES: PolicyInput[] = [
  {
    policy_id: 'policy123',
    name: 'Admin Policy',
    role_ids: ['role123'],
    rules: [
      { rule_id: 'slack-upload', app_name: 'Slack', action: 'Upload File', permission: 'deny', severity: 'high', remediation: 'block_device' },
      { rule_id: 'zoom-meet', app_name: 'Zoom', action: 'Start Meeting', permission: 'allow' },
      {
        rule_id: 'social-hours',
        app_category: 'social',
        permission: 'deny',
        severity: 'low',
        when: { days: ['mon', 'tue', 'wed', 'thu', 'fri'], time: { from: '09:00', to: '17:00' } },
      },
      {
        rule_id: 'exfil',
        app_category: 'file_sharing',
        permission: 'deny',
        severity: 'critical',
        remediation: 'block_device',
        when: { bytes_up_over: 50_000_000 },
      },
      { rule_id: 'old-ios', permission: 'deny', severity: 'medium', when: { os: ['iOS'], os_version_below: '16' } },
    ],
  },
  {
    policy_id: 'policy124',
    name: 'Restricted Meeting Access',
    role_ids: ['role456'],
    default_permission: 'deny',
    default_severity: 'low',
    rules: [
      { rule_id: 'no-meetings', app_name: 'Zoom', action: 'Start Meeting', permission: 'deny', severity: 'medium' },
      { rule_id: 'slack-ok', app_name: 'Slack', permission: 'allow' },
    ],
  },
];

// Wednesday 2026-11-25 12:00 in New York.
const NOON_NY = Date.parse('2026-11-25T17:00:00Z');

const CASES: Array<[string, EvalEvent, { permission: string; rule_id: string | null; policy_id: string | null; severity: string | null }]> = [
  [
    'explicit deny',
    { role_ids: ['role123'], app: 'Slack', action: 'Upload File' },
    { permission: 'deny', rule_id: 'slack-upload', policy_id: 'policy123', severity: 'high' },
  ],
  [
    'explicit allow',
    { role_ids: ['role123'], app: 'Zoom', action: 'Start Meeting' },
    { permission: 'allow', rule_id: 'zoom-meet', policy_id: 'policy123', severity: null },
  ],
  [
    'default allow',
    { role_ids: ['role123'], app: 'Slack', action: 'Send Message' },
    { permission: 'allow', rule_id: null, policy_id: 'policy123', severity: null },
  ],
  ['default deny', { role_ids: ['role456'], app: 'GitHub', action: 'Push' }, { permission: 'deny', rule_id: null, policy_id: 'policy124', severity: 'low' }],
  [
    'allow beats a default deny',
    { role_ids: ['role456'], app: 'Slack', action: 'Upload File' },
    { permission: 'allow', rule_id: 'slack-ok', policy_id: 'policy124', severity: null },
  ],
  [
    'deny in one role beats allow in another',
    { role_ids: ['role123', 'role456'], app: 'Zoom', action: 'Start Meeting' },
    { permission: 'deny', rule_id: 'no-meetings', policy_id: 'policy124', severity: 'medium' },
  ],
  [
    'most severe deny wins',
    { role_ids: ['role123'], app: 'Dropbox', app_category: 'file_sharing', action: 'Upload File', bytes_up: 60_000_000, os: 'iOS', os_version: '15.1' },
    { permission: 'deny', rule_id: 'exfil', policy_id: 'policy123', severity: 'critical' },
  ],
  [
    'bytes under the threshold',
    { role_ids: ['role123'], app: 'Dropbox', app_category: 'file_sharing', action: 'Upload File', bytes_up: 50_000_000 },
    { permission: 'allow', rule_id: null, policy_id: 'policy123', severity: null },
  ],
  [
    'os version below',
    { role_ids: ['role123'], app: 'Maps', action: 'Open', os: 'ios', os_version: '15.7.2' },
    { permission: 'deny', rule_id: 'old-ios', policy_id: 'policy123', severity: 'medium' },
  ],
  [
    'os version at minimum',
    { role_ids: ['role123'], app: 'Maps', action: 'Open', os: 'iOS', os_version: '16.0' },
    { permission: 'allow', rule_id: null, policy_id: 'policy123', severity: null },
  ],
  [
    'social in work hours',
    { role_ids: ['role123'], app: 'TikTok', app_category: 'social', action: 'Post', ts: NOON_NY },
    { permission: 'deny', rule_id: 'social-hours', policy_id: 'policy123', severity: 'low' },
  ],
  [
    'social after hours',
    { role_ids: ['role123'], app: 'TikTok', app_category: 'social', action: 'Post', ts: NOON_NY + 5 * 3_600_000 },
    { permission: 'allow', rule_id: null, policy_id: 'policy123', severity: null },
  ],
  [
    'social without a time',
    { role_ids: ['role123'], app: 'TikTok', app_category: 'social', action: 'Post' },
    { permission: 'allow', rule_id: null, policy_id: 'policy123', severity: null },
  ],
  [
    'no policy covers the role',
    { role_ids: ['role999'], app: 'Slack', action: 'Upload File' },
    { permission: 'allow', rule_id: null, policy_id: null, severity: null },
  ],
  ['no roles at all', { role_ids: [], app: 'Slack', action: 'Upload File' }, { permission: 'allow', rule_id: null, policy_id: null, severity: null }],
];

describe('policy compiler and WASM core', () => {
  it('decides the brief examples and precedence cases like the reference', async () => {
    const compiled = await compilePolicies(BRIEF_POLICIES, { timezone: 'America/New_York' });
    const module = await PolicyModule.instantiate(compiled);
    const verdicts = module.evaluateEvents(CASES.map(([, e]) => e));
    CASES.forEach(([name, event, expected], i) => {
      const { permission, rule_id, policy_id, severity } = verdicts[i] ?? assert.fail('missing verdict');
      assert.deepEqual({ permission, rule_id, policy_id, severity }, expected, name);
      assert.deepEqual(verdicts[i], evaluateReference(compiled.set, event), `${name}: reference`);
    });
    assert.equal(verdicts[0]?.remediation, 'block_device');
    assert.equal(compiled.stats.conditionalRules, 3);
  });

  it('evaluates batches larger than the module capacity, in order', async () => {
    const compiled = await compilePolicies(BRIEF_POLICIES, { timezone: 'America/New_York' });
    const module = await PolicyModule.instantiate(compiled, 16);
    const events = Array.from({ length: 70_001 }, (_, i) => CASES[i % CASES.length]?.[1] as EvalEvent);
    const verdicts = module.evaluateEvents(events);
    assert.equal(verdicts.length, events.length);
    verdicts.forEach((v, i) => assert.equal(v.rule_id, CASES[i % CASES.length]?.[2].rule_id));
  });

  it('gives the same hash for the same policies and reuses the module from the caches', async () => {
    const cacheDir = await mkdtemp(join(tmpdir(), 'tw-wasm-'));
    try {
      const policies = [{ policy_id: 'cache-test', name: 'C', role_ids: ['r'], rules: [{ app_name: `App-${process.pid}`, permission: 'deny' }] }];
      const first = await compilePolicies(policies, { cacheDir });
      assert.equal(first.stats.cached, false);
      assert.deepEqual(await readdir(cacheDir), [`${first.sourceHash}.wasm`]);
      const second = await compilePolicies(policies, { cacheDir });
      assert.equal(second.stats.cached, 'memory');
      assert.equal(second.hash, first.hash);
      // Same code, different table: no compiler run, but a different policy version.
      const moved = await compilePolicies([{ ...policies[0], rules: [{ app_name: `App-${process.pid}`, permission: 'allow' }] }], { cacheDir });
      assert.equal(moved.sourceHash, first.sourceHash);
      assert.notEqual(moved.hash, first.hash);
      assert.equal(moved.stats.cached, 'memory');
    } finally {
      await rm(cacheDir, { recursive: true, force: true });
    }
  });

  it('names the policy in the generated source', async () => {
    const compiled = await compilePolicies(BRIEF_POLICIES, { label: 'enterprise acme' });
    assert.match(compiled.source, /^\/\/ towerwatch policy core: generated/);
    assert.match(compiled.source, /\/\/ enterprise acme/);
    assert.match(compiled.source, /\/\/ rule exfil \(policy policy123\)/);
  });

  it('refuses policy sets beyond its limits with a clear error', async () => {
    const roles = Array.from({ length: 65 }, (_, i) => `role${i}`);
    await assert.rejects(compilePolicies({ policy_id: 'wide', name: 'W', role_ids: roles }), (err: unknown) => {
      assert.ok(err instanceof PolicyCompileError);
      assert.equal(err.code, 'too_many_roles');
      assert.match(err.message, /name 65 roles; one policy set may name at most 64/);
      return true;
    });
    await assert.rejects(compilePolicies({ policy_id: 'bad', name: 'B', rules: [{ permission: 'nope' }] }), (err: unknown) => {
      assert.ok(err instanceof PolicyCompileError);
      assert.equal(err.code, 'invalid_policy');
      assert.equal(err.issues[0]?.path, 'policies[0] (bad).rules[0].permission');
      return true;
    });
  });

  it('compiles on a worker thread without blocking the event loop', async () => {
    await using service = new PolicyCompilerService();
    let ticks = 0;
    let longestGap = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      longestGap = Math.max(longestGap, now - last);
      last = now;
      ticks++;
    }, 5);
    try {
      // A label unique to this run defeats the worker's memory cache: the compiler really runs.
      const compiled = await service.compile(BRIEF_POLICIES, { label: `worker ${process.pid} ${Date.now()}` });
      assert.equal(compiled.stats.cached, false);
      const module = await PolicyModule.instantiate(compiled);
      assert.equal(module.evaluateEvents([CASES[0]?.[1] as EvalEvent])[0]?.rule_id, 'slack-upload');
    } finally {
      clearInterval(timer);
    }
    assert.ok(ticks > 10, `the timer ran ${ticks} times while compiling`);
    // Loose: only a synchronous compile on this thread (hundreds of ms) would break it.
    assert.ok(longestGap < 250, `longest event-loop gap ${longestGap.toFixed(0)} ms`);
    await assert.rejects(service.compile({ policy_id: 'x', name: 'X', rules: [{ permission: 'deny', when: { days: ['someday'] } }] }), (err: unknown) => {
      assert.ok(err instanceof PolicyCompileError);
      assert.equal(err.code, 'invalid_policy');
      assert.match(err.issues[0]?.message ?? '', /unknown day 'someday'/);
      return true;
    });
  });
});

/** Explanations (explain.ts): precedence spelled out, agreement with the evaluators, the CLI. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { createTrafficGenerator } from '../fixtures/traffic.js';
import { generateWorld } from '../fixtures/world.js';
import { worldDirectory, worldPolicyInputs } from '../fixtures/worldPolicies.js';
import { compilePolicySet } from './compiler.js';
import { enrichEvent } from './enrich.js';
import type { EvalEvent } from './event.js';
import { explainReference, explanationText } from './explain.js';
import { normalizePolicies } from './language.js';
import { PolicyModule } from './policyModule.js';
import { evaluateReference } from './reference.js';

const POLICY = {
  policy_id: 'p',
  name: 'P',
  role_ids: ['eng'],
  timezone: 'UTC',
  rules: [
    { rule_id: 'allow-chat', app_name: 'Chat', permission: 'allow' },
    { rule_id: 'deny-chat-low', app_name: 'Chat', permission: 'deny', severity: 'low' },
    { rule_id: 'deny-social', app_category: 'social', permission: 'deny', severity: 'high', remediation: 'block_app' },
    { rule_id: 'deny-chat-office', app_name: 'Chat', permission: 'deny', severity: 'critical', when: { time: { from: '09:00', to: '17:00' } } },
    { rule_id: 'deny-chat-high-too', app_name: 'Chat', permission: 'deny', severity: 'high' },
    { rule_id: 'upload-only', app_name: 'Chat', action: 'Upload', permission: 'deny', severity: 'critical' },
  ],
};
const set = normalizePolicies(POLICY);
const at = (hhmm: string): number => Date.parse(`2026-06-10T${hhmm}:00Z`);
const chat = (ts: number): EvalEvent => ({ role_ids: ['eng'], app: 'Chat', app_category: 'social', action: 'Read', ts });

describe('explainReference', () => {
  it('names the deciding rule with its tests, and why each other match lost', () => {
    const x = explainReference(set, chat(at('10:00')));
    assert.deepEqual(x.verdict, evaluateReference(set, chat(at('10:00'))));
    assert.equal(x.deciding?.rule_id, 'deny-chat-office');
    assert.deepEqual(
      x.deciding?.checks.map((c) => [c.test, c.held]),
      [
        ['role', true],
        ['app', true],
        ['window', true],
      ],
    );
    assert.deepEqual(x.deciding?.checks[2], { test: 'window', expected: { from: '09:00', to: '17:00', timezone: 'UTC' }, seen: '10:00', held: true });
    assert.deepEqual(
      x.beaten.map((b) => [b.rule_id ?? `default of ${b.policy_id}`, b.lost_because]),
      [
        ['deny-social', 'a critical deny wins over a high one'],
        ['deny-chat-high-too', 'a critical deny wins over a high one'],
        ['deny-chat-low', 'a critical deny wins over a low one'],
        ['allow-chat', 'an explicit deny wins over an explicit allow'],
        ['default of p', "an explicit deny wins over a policy's default allow"],
      ],
    );
    assert.deepEqual(
      x.not_matching.map((n) => [n.rule_id, n.failed.test, n.failed.seen]),
      [['upload-only', 'action', 'Read']],
    );
  });

  it('out of the window the earlier of two equal denies wins, and the window rule says why it did not match', () => {
    const x = explainReference(set, chat(at('20:15')));
    assert.equal(x.deciding?.rule_id, 'deny-social');
    assert.equal(x.beaten.find((b) => b.rule_id === 'deny-chat-high-too')?.lost_because, 'equal precedence: the earlier rule (deny-social) wins');
    const window = x.not_matching.find((n) => n.rule_id === 'deny-chat-office');
    assert.deepEqual(window?.failed, { test: 'window', expected: { from: '09:00', to: '17:00', timezone: 'UTC' }, seen: '20:15', held: false });
    const text = explanationText(x);
    assert.match(text, /^verdict: deny, high, block_app, decided by rule deny-social \(policy p\)\n/);
    assert.match(text, /✗ window: needs \{"from":"09:00","to":"17:00","timezone":"UTC"\}, event has 20:15/);
  });

  it('a role no policy covers: allowed by no rule, nothing beaten, nothing listed', () => {
    const x = explainReference(set, { ...chat(at('10:00')), role_ids: ['sales'] });
    assert.deepEqual(x, {
      verdict: { permission: 'allow', rule_id: null, policy_id: null, severity: null, remediation: null },
      deciding: null,
      beaten: [],
      not_matching: [],
    });
    assert.match(explanationText(x), /no policy of the event's roles covers it/);
  });

  it("agrees with the reference evaluator and the WASM module on a world's traffic", async () => {
    const world = generateWorld({ seed: 5, enterprises: 3, usersPerEnterprise: 8, towers: 5 });
    const dir = worldDirectory(world);
    let denied = 0;
    for (const e of world.enterprises) {
      const policies = normalizePolicies(worldPolicyInputs(world, e.id), { timezone: e.timezone });
      const module = await PolicyModule.instantiate(await compilePolicySet(policies));
      const events = createTrafficGenerator(world, { seed: 9, violationRatio: 0.3 })
        .nextEvents(3000)
        .flatMap((f) => f.events)
        .map((ev) => enrichEvent(dir, ev))
        .flatMap((en) => (en.enforced && en.enterpriseId === e.id ? [en.event] : []));
      const wasm = module.evaluateEvents(events);
      for (const [i, ev] of events.entries()) {
        const x = explainReference(policies, ev);
        assert.deepEqual(x.verdict, wasm[i], `event ${i} of ${e.id}`);
        if (x.deciding !== null) assert.ok(x.deciding.checks.every((c) => c.held));
        for (const b of x.beaten) assert.ok(b.checks.every((c) => c.held) && b.rank < (x.deciding?.rank ?? 0));
        for (const n of x.not_matching)
          assert.equal(
            n.checks.find((c) => !c.held),
            n.failed,
          );
        if (x.verdict.permission === 'deny') denied++;
      }
    }
    assert.ok(denied > 20, `${denied} denies explained`);
  });
});

describe('towerwatch rules explain', () => {
  const cli = join(import.meta.dirname, '..', 'bin', 'towerwatch.js');
  const run = promisify(execFile);
  let dir = '';
  after(() => rm(dir, { recursive: true, force: true }));

  it('prints the explanation, or JSON; a bad event is a clear error', async () => {
    dir = await mkdtemp(join(tmpdir(), 'tw-explain-'));
    await writeFile(join(dir, 'policy.json'), JSON.stringify(POLICY, null, 2));
    await writeFile(
      join(dir, 'event.json'),
      JSON.stringify({ role_id: 'eng', app_name: 'Chat', app_category: 'social', action: 'Read', ts: '2026-06-10T10:00:00Z' }, null, 2),
    );
    const text = await run(process.execPath, [cli, 'rules', 'explain', join(dir, 'policy.json'), join(dir, 'event.json')]);
    assert.match(text.stdout, /^verdict: deny, critical, decided by rule deny-chat-office \(policy p\)\n {2}✓ role/);
    assert.match(text.stdout, /also matched, and lost:\n {2}- rule deny-social \(policy p\): deny, high, block_app — a critical deny wins over a high one/);
    const json = await run(process.execPath, [cli, 'rules', 'explain', '--json', join(dir, 'policy.json'), join(dir, 'event.json')]);
    assert.equal(JSON.parse(json.stdout).deciding.rule_id, 'deny-chat-office');

    await writeFile(join(dir, 'bad.json'), JSON.stringify({ app_name: 'Chat' }));
    await assert.rejects(
      run(process.execPath, [cli, 'rules', 'explain', join(dir, 'policy.json'), join(dir, 'bad.json')]),
      (err: { code: number; stderr: string }) => {
        assert.equal(err.code, 1);
        assert.match(err.stderr, /bad\.json: role_id: needs role_id or role_ids/);
        return true;
      },
    );
  });
});

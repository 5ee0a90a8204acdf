/**
 * `POST /decisions` against the real api server: every answer equals the reference evaluator's
 * verdict for the same enriched event (devices, users, times, towers from simulated traffic),
 * the batch form holds 1,000, a policy change is answered for at once, and tenancy holds.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { UsageEvent } from '../core/domain.js';
import { startApiFixture } from './testing/apiFixture.js';
import { createTrafficGenerator } from '../fixtures/traffic.js';
import { BRIEF } from '../fixtures/world.js';
import { worldDirectory, worldPolicyInputs } from '../fixtures/worldPolicies.js';
import { enrichEvent, evaluateReference, normalizePolicies, type NormalizedPolicySet, type Verdict } from '../rules-wasm/index.js';
import { MAX_DECISIONS_PER_REQUEST } from './routes/decisions.js';

const fx = await startApiFixture();
const { world } = fx;
const dir = worldDirectory(world);
const acme = world.enterprises.find((e) => e.id === BRIEF.acme) ?? assert.fail('acme');
const acmePolicies: NormalizedPolicySet = normalizePolicies(worldPolicyInputs(world, acme.id), { timezone: acme.timezone });
const verdictOf = (d: Record<string, unknown>): Verdict => ({
  permission: d['permission'] as Verdict['permission'],
  rule_id: d['rule_id'] as string | null,
  policy_id: d['policy_id'] as string | null,
  severity: d['severity'] as Verdict['severity'],
  remediation: d['remediation'] as Verdict['remediation'],
});
/** Acme's events of simulated traffic, with no bytes (a decision is about the action, not its volume). */
const acmeEvents = (n: number, seed: number): UsageEvent[] =>
  createTrafficGenerator(world, { seed, violationRatio: 0.3 })
    .nextEvents(n * 4)
    .flatMap((f) => f.events)
    .filter((e) => dir.device(e.device)?.enterprise_id === acme.id)
    .slice(0, n)
    .map((e) => ({ ...e, bytes_up: 0, bytes_down: 0 }));
const requestOf = (e: UsageEvent) => ({ device_id: e.device, app_id: e.app, action_id: e.action, tower_id: e.tower, at: new Date(e.ts).toISOString() });

test('one decision for a device equals the reference verdict of the enriched event; a violation is denied by its rule', async () => {
  const events = acmeEvents(400, 11);
  let denied = 0;
  let checked = 0;
  for (const e of events) {
    const enriched = enrichEvent(dir, e);
    if (!enriched.enforced) continue;
    const expected = evaluateReference(acmePolicies, enriched.event);
    if (expected.permission === 'allow' && checked - denied > 40) continue; // enough allows: look for denies
    const r = await fx.call('POST', '/decisions', { as: 'viewer@acme', body: requestOf(e) });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(verdictOf(r.json), expected, JSON.stringify(requestOf(e)));
    assert.match(r.json.policy_version, /^[0-9a-f]{16,}$/);
    assert.equal(r.json.unenforced_reason, null);
    checked++;
    if (expected.permission === 'deny') denied++;
  }
  assert.ok(denied >= 10 && checked - denied >= 10, `denied ${denied} of ${checked}`);
});

test(`the batch form: ${MAX_DECISIONS_PER_REQUEST} requests in one call, each the reference verdict; users by their roles; more is a 400`, async () => {
  const events = acmeEvents(MAX_DECISIONS_PER_REQUEST, 12);
  assert.equal(events.length, MAX_DECISIONS_PER_REQUEST);
  const r = await fx.call('POST', '/decisions', { as: 'admin@acme', body: { requests: events.map(requestOf) } });
  assert.equal(r.status, 200, r.text.slice(0, 500));
  const decisions = r.json.decisions as Array<Record<string, unknown>>;
  assert.equal(decisions.length, events.length);
  const versions = new Set<unknown>();
  let denied = 0;
  for (const [i, e] of events.entries()) {
    const enriched = enrichEvent(dir, e);
    const d = decisions[i]!;
    versions.add(d['policy_version']);
    if (!enriched.enforced) {
      assert.deepEqual(verdictOf(d), { permission: 'allow', rule_id: null, policy_id: null, severity: null, remediation: null });
      assert.equal(d['unenforced_reason'], enriched.reason);
      continue;
    }
    const expected = evaluateReference(acmePolicies, enriched.event);
    assert.deepEqual(verdictOf(d), expected, `request ${i}`);
    if (expected.permission === 'deny') denied++;
  }
  assert.ok(denied > 0);
  assert.equal(versions.size, 1, 'one policy version answers a whole batch');

  // A user, without a device: the roles decide; OS conditions cannot hold.
  const users = world.users.filter((u) => u.enterprise_id === acme.id).slice(0, 5);
  const userRequests = users.flatMap((u) =>
    events.slice(0, 40).map((e) => ({ user_id: u.id, app_id: e.app, action_id: e.action, tower_id: e.tower, at: e.ts })),
  );
  const byUser = await fx.call('POST', '/decisions', { as: 'admin@acme', body: { requests: userRequests.map((q) => ({ ...q, at: String(q.at) })) } });
  assert.equal(byUser.status, 200, byUser.text.slice(0, 500));
  for (const [i, q] of userRequests.entries()) {
    const app = dir.app(q.app_id);
    const action = dir.action(q.action_id);
    const expected = evaluateReference(acmePolicies, {
      role_ids: dir.roleIdsOfUser(q.user_id, acme.id),
      app: app?.name ?? q.app_id,
      app_category: app?.category,
      action: action?.name ?? q.action_id,
      tower_id: q.tower_id,
      region: dir.tower(q.tower_id)?.region,
      ts: q.at,
      bytes_up: 0,
      bytes_down: 0,
    });
    assert.deepEqual(verdictOf((byUser.json.decisions as Array<Record<string, unknown>>)[i]!), expected, `user request ${i}`);
  }

  const tooMany = await fx.call('POST', '/decisions', { as: 'admin@acme', body: { requests: events.concat(events[0]!).map(requestOf) } });
  assert.equal(tooMany.status, 400, tooMany.text.slice(0, 300));
  assert.equal(typeof tooMany.json.error.code, 'string');
  assert.match(JSON.stringify(tooMany.json.error), /1000/);
});

test('bad requests: neither or both of device_id and user_id, a bad time, unknown fields', async () => {
  const base = { app_id: 'app1', action_id: 'act1' };
  for (const body of [
    base,
    { ...base, device_id: 'd1', user_id: 'u1' },
    { ...base, device_id: 'd1', at: 'yesterday' },
    { ...base, device_id: 'd1', verdict: 'allow' },
    { requests: [] },
    'not an object',
  ]) {
    const r = await fx.call('POST', '/decisions', { as: 'admin@acme', body });
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
    assert.ok(r.json.error.code && r.json.error.message, r.text);
  }
});

test('tenancy: another enterprise’s device or user is unknown; a carrier operator names the enterprise', async () => {
  const globexDevice = world.devices.find((d) => d.enterprise_id === BRIEF.globex && d.user_id !== null) ?? assert.fail('a globex device');
  const globexUser = world.users.find((u) => u.enterprise_id === BRIEF.globex) ?? assert.fail('a globex user');
  const ask = { app_id: world.apps[0]!.id, action_id: world.actions[0]!.id };
  const byDevice = await fx.call('POST', '/decisions', { as: 'admin@acme', body: { ...ask, device_id: globexDevice.id } });
  assert.equal(byDevice.status, 404, byDevice.text);
  assert.equal(byDevice.json.error.code, 'device_not_found');
  const byUser = await fx.call('POST', '/decisions', { as: 'admin@acme', body: { ...ask, user_id: globexUser.id } });
  assert.equal(byUser.status, 404, byUser.text);
  assert.equal(byUser.json.error.code, 'user_not_found');
  const batch = await fx.call('POST', '/decisions', { as: 'admin@acme', body: { requests: [{ ...ask, device_id: globexDevice.id }] } });
  assert.equal(batch.status, 200);
  assert.equal(batch.json.decisions[0].error.code, 'device_not_found');
  const named = await fx.call('POST', `/decisions?enterprise_id=${BRIEF.globex}`, { as: 'admin@acme', body: { ...ask, device_id: globexDevice.id } });
  assert.equal(named.status, 403, named.text);
  assert.equal(named.json.error.code, 'tenant_forbidden');

  assert.equal((await fx.call('POST', '/decisions', { as: 'ops@carrier', body: { ...ask, device_id: globexDevice.id } })).status, 400);
  const own = await fx.call('POST', `/decisions?enterprise_id=${BRIEF.globex}`, { as: 'admin@globex', body: { ...ask, device_id: globexDevice.id } });
  assert.equal(own.status, 200, own.text);
  assert.equal((await fx.call('POST', '/decisions', { body: { ...ask, device_id: globexDevice.id } })).status, 401);
});

test('a policy change is answered for at once, with its new version', async () => {
  const e = acmeEvents(400, 13).find((x) => {
    const en = enrichEvent(dir, x);
    return en.enforced && evaluateReference(acmePolicies, en.event).permission === 'deny';
  });
  assert.ok(e, 'a denied event');
  const before = await fx.call('POST', '/decisions', { as: 'admin@acme', body: requestOf(e) });
  assert.equal(before.json.permission, 'deny');
  const { policy_id, rule_id } = before.json as { policy_id: string; rule_id: string };
  const rule = await fx.store.get('policy_rule', acme.id, rule_id);
  assert.ok(rule, `rule ${rule_id} of ${policy_id}`);
  // A change that does not compile (an allow rule cannot remediate) leaves the version in force.
  await fx.store.upsert('policy_rule', { ...rule.value, permission: 'allow' });
  const kept = await fx.call('POST', '/decisions', { as: 'admin@acme', body: requestOf(e) });
  assert.deepEqual(kept.json, before.json);
  const { severity: _s, remediation: _r, ...allow } = rule.value;
  await fx.store.upsert('policy_rule', { ...allow, permission: 'allow' });
  const deadline = Date.now() + 30_000;
  let after = before;
  while (Date.now() < deadline) {
    after = await fx.call('POST', '/decisions', { as: 'admin@acme', body: requestOf(e) });
    if (after.json.policy_version !== before.json.policy_version) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.notEqual(after.json.policy_version, before.json.policy_version, 'a new version answers');
  assert.notDeepEqual(verdictOf(after.json), verdictOf(before.json));
  await fx.store.upsert('policy_rule', rule.value);
});

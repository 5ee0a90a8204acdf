/**
 * Policy versions through the real api: each change is recorded with its author and parent, the
 * version is the one verdicts carry, a version shows what changed from its parent, two versions
 * diff by decision cells, a rollback restores a policy (a change back, by whoever asked), and
 * another enterprise sees none of it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { until } from '../core/testing/until.js';
import { BRIEF } from '../fixtures/world.js';
import { FIXTURE_PASSWORD, startApiFixture } from './testing/apiFixture.js';

const fx = await startApiFixture();
const acme = BRIEF.acme;
const device = fx.world.devices.find((d) => d.enterprise_id === acme && d.user_id !== null) ?? assert.fail('an acme device');
// A deny rule of acme's with a severity to change.
const rule =
  fx.world.policyRules.find((r) => r.enterprise_id === acme && r.permission === 'deny' && r.when === undefined && r.app_id !== undefined) ??
  assert.fail('an acme deny rule');
const policyId = rule.policy_id;

interface Entry {
  version: string;
  parent: string | null;
  author: string;
  created_at: string;
  changed: boolean;
  current: boolean;
}
const history = async (as = 'admin@acme'): Promise<Entry[]> => {
  const r = await fx.call('GET', `/policies/${policyId}/versions`, { as });
  assert.equal(r.status, 200, r.text);
  return r.json.versions as Entry[];
};
const decisionVersion = async (): Promise<string> => {
  const r = await fx.call('POST', '/decisions', { as: 'admin@acme', body: { device_id: device.id, app_id: rule.app_id, action_id: rule.action_id ?? 'x' } });
  assert.equal(r.status, 200, r.text);
  return r.json.policy_version as string;
};

let first: Entry;
let second: Entry;

test('the policies in force at start are a version by system, the one verdicts carry', async () => {
  await until(async () => (await history()).length > 0, 20_000, 'the first version recorded');
  [first] = (await history()) as [Entry];
  assert.equal(first.author, 'system');
  assert.equal(first.parent, null);
  assert.equal(first.current, true);
  assert.equal(await decisionVersion(), first.version);
});

test('a rule change is a new version by the admin who made it; the rule shows updated_by', async () => {
  const changed = await fx.call('POST', '/policy-rules', {
    as: 'admin@acme',
    body: {
      policy_rule_id: rule.id,
      policy_id: policyId,
      role_id: rule.role_id,
      app_id: rule.app_id,
      app_category: rule.app_category,
      action_id: rule.action_id,
      remediation: rule.remediation,
      permission: 'deny',
      severity: rule.severity === 'critical' ? 'low' : 'critical',
    },
  });
  assert.equal(changed.status, 200, changed.text);
  assert.equal(changed.json.updated_by, 'admin@acme');
  await until(async () => (await history()).length === 2, 20_000, 'the second version recorded');
  const [newest, older] = (await history()) as [Entry, Entry];
  second = newest;
  assert.deepEqual(
    { parent: newest.parent, author: newest.author, changed: newest.changed, current: newest.current },
    { parent: first.version, author: 'admin@acme', changed: true, current: true },
  );
  assert.equal(older.version, first.version);
  assert.equal(older.current, false);
  await until(async () => (await decisionVersion()) === second.version, 20_000, 'decisions on the new version');
  const policy = await fx.call('GET', `/policies/${policyId}`, { as: 'viewer@acme' });
  assert.equal(policy.json.rules.find((r: { policy_rule_id: string }) => r.policy_rule_id === rule.id).updated_by, 'admin@acme');
});

test('a version shows its policies and what changed from its parent; two versions diff by decision cells', async () => {
  const v = await fx.call('GET', `/policy-versions/${second.version}`, { as: 'viewer@acme' });
  assert.equal(v.status, 200, v.text);
  assert.equal(v.json.parent, first.version);
  assert.ok(Array.isArray(v.json.policies) && v.json.policies.some((p: { policy_id: string }) => p.policy_id === policyId));
  const d = v.json.diff_from_parent;
  assert.ok(d.changes.severity_changed > 0, JSON.stringify(d.changes));
  assert.equal(d.changes.allow_to_deny + d.changes.deny_to_allow + d.changes.remediation_changed, 0);
  assert.ok(d.changed.every((c: { change: string; after: { rule_id: string } }) => c.change === 'severity_changed' && c.after.rule_id === rule.id));

  const diff = await fx.call('GET', `/policy-versions/${first.version}/diff/${second.version}?limit=1`, { as: 'viewer@acme' });
  assert.equal(diff.status, 200, diff.text);
  assert.deepEqual([diff.json.from, diff.json.to, diff.json.changes], [first.version, second.version, d.changes]);
  assert.equal(diff.json.changed.length, 1);
  assert.equal(diff.json.truncated, d.changed_cells > 1);
  const back = await fx.call('GET', `/policy-versions/${second.version}/diff/${first.version}`, { as: 'viewer@acme' });
  assert.equal(back.json.changes.severity_changed, d.changes.severity_changed);
  assert.equal((await fx.call('GET', `/policy-versions/0123456789abcdef`, { as: 'viewer@acme' })).status, 404);
  assert.equal((await fx.call('GET', `/policy-versions/not-a-version`, { as: 'viewer@acme' })).status, 404);
});

test('a rollback restores the policy as it was: a change back to the first version, by the admin who asked', async () => {
  assert.equal((await fx.call('POST', `/policies/${policyId}/rollback`, { as: 'viewer@acme', body: { version: first.version } })).status, 403);
  const r = await fx.call('POST', `/policies/${policyId}/rollback`, { as: 'admin@acme', body: { version: first.version } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.restored_from, first.version);
  await until(async () => (await history()).length === 3, 20_000, 'the rollback recorded');
  const [newest] = (await history()) as [Entry];
  assert.deepEqual(
    { version: newest.version, parent: newest.parent, author: newest.author, current: newest.current },
    { version: first.version, parent: second.version, author: 'admin@acme', current: true },
  );
  await until(async () => (await decisionVersion()) === first.version, 20_000, 'decisions back on the first version');
  const missing = await fx.call('POST', '/policies/no-such-policy/rollback', { as: 'admin@acme', body: { version: first.version } });
  assert.equal(missing.status, 404);
  assert.equal(missing.json.error.code, 'not_in_version');
});

test("tenancy: another enterprise's admin sees none of acme's versions and cannot roll acme back", async () => {
  assert.equal((await fx.call('GET', `/policies/${policyId}/versions`, { as: 'admin@globex' })).status, 404);
  assert.equal((await fx.call('GET', `/policy-versions/${first.version}`, { as: 'admin@globex' })).status, 404);
  assert.equal((await fx.call('GET', `/policy-versions/${first.version}/diff/${second.version}`, { as: 'admin@globex' })).status, 404);
  assert.equal((await fx.call('POST', `/policies/${policyId}/rollback`, { as: 'admin@globex', body: { version: first.version } })).status, 404);
  assert.equal((await fx.call('GET', `/policies/${policyId}/versions?enterprise_id=${BRIEF.globex}`, { as: 'admin@acme' })).status, 403);
});

test('versions survive a restart: a new api node on the same ClickHouse lists the same history and records nothing twice', async () => {
  const count = async (): Promise<string> =>
    (
      await (
        await fx.clickhouse.client.query({ query: 'SELECT toString(count()) AS n FROM policy_versions FINAL', format: 'JSONEachRow' })
      ).json<{
        n: string;
      }>()
    )[0]!.n;
  const before = await history();
  const rows = await count();
  const restarted = await fx.startServer();
  const token = (await fx.call('POST', '/auth/login', { server: restarted, body: { username: 'admin@acme', password: FIXTURE_PASSWORD } })).json
    .access_token as string;
  // Its recorder starts by recording what is in force; that version is the newest one already stored.
  await new Promise((r) => setTimeout(r, 1500));
  const after = await fx.call('GET', `/policies/${policyId}/versions`, { server: restarted, token });
  assert.equal(after.status, 200, after.text);
  assert.deepEqual(after.json.versions, before);
  assert.equal(await count(), rows);
  await restarted.close();
});

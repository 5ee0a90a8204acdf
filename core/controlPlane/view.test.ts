import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Account, Device, Enterprise, Plan, Policy, PolicyRule, Role, User } from '../domain.js';
import { uniqueName, withNats } from '../testing/natsFixture.js';
import { rolePolicyId, userRoleId } from './keys.js';
import { ControlPlaneStore } from './store.js';
import { ControlPlaneView, type ControlPlaneChange, type ControlPlaneViewOptions } from './view.js';

const nats = await withNats();

const NOW = '2026-01-01T00:00:00.000Z';
const ids = (entities: ReadonlyArray<{ id: string }>): string[] => entities.map((e) => e.id);
const plan = (id: string, auto_remediation = false): Plan => ({ id, name: id, auto_remediation, retention_days: 30 });
const enterprise = (id: string, plan_id = 'basic'): Enterprise => ({ id, name: id, plan_id, timezone: 'UTC' });
const user = (ent: string, id: string, name = id): User => ({ id, enterprise_id: ent, name, email: `${id}@${ent}.example` });
const role = (ent: string, id: string): Role => ({ id, enterprise_id: ent, name: id });
const policy = (ent: string, id: string): Policy => ({
  id,
  enterprise_id: ent,
  name: id,
  default_permission: 'allow',
  default_severity: 'low',
  enabled: true,
  updated_at: NOW,
});
const rule = (ent: string, policy_id: string, id: string): PolicyRule => ({
  id,
  enterprise_id: ent,
  policy_id,
  app_category: 'social',
  permission: 'deny',
  severity: 'high',
  enabled: true,
  updated_at: NOW,
});
const device = (ent: string, id: string, user_id: string | null): Device => ({
  id,
  enterprise_id: ent,
  user_id,
  model: 'Pixel 8',
  os: 'android',
  os_version: '14',
  status: 'active',
  registered_at: NOW,
});

/** A fresh bucket with a store on it, and a view factory that closes what it opens. */
async function setup(t: { after(fn: () => Promise<void>): void }) {
  const bucket = uniqueName('cpv');
  const nc = await nats.connect();
  const store = await ControlPlaneStore.open(nc, { bucket });
  const openView = async (options: ControlPlaneViewOptions = {}) => {
    const view = await ControlPlaneView.open(nc, { bucket, ...options });
    t.after(() => view.close());
    return view;
  };
  return { store, openView, nc, bucket };
}

/** Resolves with the first change notification that satisfies `predicate`. */
function nextChange(view: ControlPlaneView, predicate: (c: ControlPlaneChange) => boolean = () => true, timeoutMs = 5_000) {
  return new Promise<ControlPlaneChange>((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error('no matching change notification'));
    }, timeoutMs);
    const off = view.onChange((c) => {
      if (!predicate(c)) return;
      clearTimeout(timer);
      off();
      resolve(c);
    });
  });
}

test('opens on an empty bucket at once', async (t) => {
  const { openView } = await setup(t);
  const started = Date.now();
  const view = await openView();
  assert.ok(Date.now() - started < 2_000);
  assert.equal(view.version, 0);
  assert.deepEqual(view.list('user'), []);
  assert.equal(view.enterprise('acme'), undefined);
});

test('initial load holds every current value, not deleted ones', async (t) => {
  const { store, openView } = await setup(t);
  await store.upsert('plan', plan('basic'));
  await store.upsert('enterprise', enterprise('acme'));
  await store.upsert('enterprise', enterprise('globex'));
  for (let i = 0; i < 50; i++) await store.upsert('user', user(i % 2 === 0 ? 'acme' : 'globex', `u${i}`));
  await store.upsert('user', user('acme', 'u0', 'renamed'));
  await store.delete('user', 'acme', 'u2');

  const view = await openView();
  assert.equal(view.plan('basic')?.name, 'basic');
  assert.equal(view.enterprise('globex')?.id, 'globex');
  assert.equal(view.usersOfEnterprise('acme').length, 24);
  assert.equal(view.usersOfEnterprise('globex').length, 25);
  assert.equal(view.user('u0', 'acme')?.name, 'renamed');
  assert.equal(view.user('u2'), undefined);
  assert.equal(view.count('user'), 49);
  const stored = await store.get('user', 'acme', 'u0');
  assert.equal(view.get('user', 'acme', 'u0')?.revision, stored?.revision);
  assert.ok(Object.isFrozen(view.user('u0')), 'shared values are frozen');
});

test('opening while writes are in flight converges to the store', async (t) => {
  const { store, openView } = await setup(t);
  for (let i = 0; i < 20; i++) await store.upsert('user', user('acme', `u${i}`, 'v0'));
  let stop = false;
  let writes = 0;
  const writer = (async () => {
    while (!stop) {
      const i = writes++ % 40;
      await store.upsert('user', user('acme', `u${i}`, `v${writes}`));
    }
  })();
  const view = await openView();
  stop = true;
  await writer;
  const expected = new Map((await store.list('user', 'acme')).map((e) => [e.id, e.revision]));
  const converged = () => {
    const have = view.entries('user', 'acme');
    return have.length === expected.size && have.every((e) => expected.get(e.id) === e.revision);
  };
  if (!converged()) {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('view did not converge')), 5_000);
      const off = view.onChange(() => {
        if (!converged()) return;
        clearTimeout(timer);
        off();
        resolve();
      });
    });
  }
  assert.ok(writes > 0);
  assert.equal(view.revision, (await store.kv.status()).streamInfo.state.last_seq);
});

test('live updates, deletes and purges reach the view, with coalesced notifications', async (t) => {
  const { store, openView } = await setup(t);
  await store.upsert('enterprise', enterprise('acme'));
  const view = await openView({ coalesceMs: 50 });
  const v0 = view.version;

  // Two enterprises written together: one notification naming both.
  const both = nextChange(view);
  await Promise.all([store.create('user', user('acme', 'a1')), store.create('user', user('globex', 'g1'))]);
  const change = await both;
  assert.deepEqual([...change.kinds], ['user']);
  assert.deepEqual([...change.enterprises].sort(), ['acme', 'globex']);
  assert.equal(change.global, false);
  assert.equal(change.version, view.version);
  assert.ok(view.version > v0);
  assert.equal(view.user('a1', 'acme')?.id, 'a1');
  assert.equal(view.user('g1')?.enterprise_id, 'globex');

  const updated = nextChange(view, (c) => c.kinds.has('user'));
  const rev = (await store.get('user', 'acme', 'a1'))?.revision ?? 0;
  await store.update('user', user('acme', 'a1', 'Alice'), rev);
  await updated;
  assert.equal(view.user('a1')?.name, 'Alice');

  const deleted = nextChange(view, (c) => c.enterprises.has('acme'));
  await store.delete('user', 'acme', 'a1');
  await deleted;
  assert.equal(view.user('a1'), undefined);
  assert.deepEqual(view.usersOfEnterprise('acme'), []);

  const purged = nextChange(view, (c) => c.enterprises.has('globex'));
  await store.kv.purge('user.globex.g1');
  await purged;
  assert.equal(view.user('g1'), undefined);
});

test('global changes, plan changes name the enterprises on the plan', async (t) => {
  const { store, openView } = await setup(t);
  await store.upsert('plan', plan('basic'));
  await store.upsert('plan', plan('pro'));
  await store.upsert('enterprise', enterprise('acme', 'pro'));
  await store.upsert('enterprise', enterprise('globex', 'basic'));
  const view = await openView();
  assert.equal(view.planOfEnterprise('acme')?.id, 'pro');

  const planChange = nextChange(view, (c) => c.kinds.has('plan'));
  await store.upsert('plan', plan('pro', true));
  const c1 = await planChange;
  assert.equal(c1.global, true);
  assert.deepEqual([...c1.enterprises], ['acme']);
  assert.equal(view.planOfEnterprise('acme')?.auto_remediation, true);

  const appChange = nextChange(view, (c) => c.kinds.has('app'));
  await store.upsert('app', { id: 'tiktok', name: 'TikTok', category: 'social' });
  const c2 = await appChange;
  assert.equal(c2.global, true);
  assert.equal(c2.enterprises.size, 0);
  assert.equal(view.app('tiktok')?.category, 'social');
});

test('relations: roles of a user, policies and roles of each other, rules, devices, accounts', async (t) => {
  const { store, openView } = await setup(t);
  await store.upsert('user', user('acme', 'alice'));
  await store.upsert('role', role('acme', 'sales'));
  await store.upsert('role', role('acme', 'field'));
  await store.upsert('policy', policy('acme', 'p1'));
  await store.upsert('policy_rule', rule('acme', 'p1', 'r1'));
  await store.upsert('policy_rule', rule('acme', 'p1', 'r2'));
  await store.upsert('user_role', { enterprise_id: 'acme', user_id: 'alice', role_id: 'sales', assigned_at: NOW });
  await store.upsert('user_role', { enterprise_id: 'acme', user_id: 'alice', role_id: 'field', assigned_at: NOW });
  await store.upsert('role_policy', { enterprise_id: 'acme', role_id: 'sales', policy_id: 'p1', assigned_at: NOW });
  await store.upsert('device', device('acme', 'imei-hash-1', 'alice'));
  await store.upsert('device', device('globex', 'imei-hash-2', null));
  const admin: Account = {
    username: 'admin@acme',
    display_name: 'Admin',
    role: 'enterprise_admin',
    enterprise_id: 'acme',
    carrier_id: null,
    password_hash: 'h',
    created_at: NOW,
  };
  await store.upsert('account', admin);

  const view = await openView();
  assert.deepEqual(ids(view.rolesOfUser('alice')).sort(), ['field', 'sales']);
  assert.deepEqual(view.rolesOfUser('alice', 'globex'), []);
  assert.deepEqual(ids(view.rolesOfPolicy('p1')), ['sales']);
  assert.deepEqual(ids(view.policiesOfRole('sales')), ['p1']);
  assert.deepEqual(ids(view.policiesOfEnterprise('acme')), ['p1']);
  assert.deepEqual(ids(view.rulesOfPolicy('p1')).sort(), ['r1', 'r2']);
  assert.equal(view.device('imei-hash-1')?.enterprise_id, 'acme');
  assert.equal(view.device('imei-hash-2')?.enterprise_id, 'globex');
  assert.equal(view.device('unknown'), undefined);
  assert.deepEqual(view.account('admin@acme'), admin);
  assert.ok(view.get('user_role', 'acme', userRoleId('alice', 'sales')));

  // Indexes follow changes.
  const unassigned = nextChange(view, (c) => c.kinds.has('user_role'));
  await store.delete('user_role', 'acme', userRoleId('alice', 'field'));
  await unassigned;
  assert.deepEqual(ids(view.rolesOfUser('alice')), ['sales']);

  const assigned = nextChange(view, (c) => c.kinds.has('role_policy'));
  await store.upsert('policy', policy('acme', 'p2'));
  await store.upsert('role_policy', { enterprise_id: 'acme', role_id: 'field', policy_id: 'p2', assigned_at: NOW });
  await assigned;
  assert.deepEqual(ids(view.rolesOfPolicy('p2')), ['field']);
  assert.ok(view.get('role_policy', 'acme', rolePolicyId('field', 'p2')));
});

test('unsubscribe stops notifications; a throwing listener does not stop others', async (t) => {
  const { store, openView } = await setup(t);
  const errors: unknown[] = [];
  const view = await openView({ onError: (e) => errors.push(e) });
  let calls = 0;
  const off = view.onChange(() => {
    calls++;
  });
  view.onChange(() => {
    throw new Error('listener bug');
  });
  const first = nextChange(view);
  await store.upsert('user', user('acme', 'u1'));
  await first;
  assert.equal(calls, 1);
  assert.equal(errors.length, 1);
  off();
  const second = nextChange(view);
  await store.upsert('user', user('acme', 'u2'));
  await second;
  assert.equal(calls, 1);
});

test('opens from a KV handle; close is idempotent; a closed connection ends the view', async (t) => {
  const { store, bucket } = await setup(t);
  await store.upsert('user', user('acme', 'u1'));
  {
    await using view = await ControlPlaneView.open(store.kv);
    assert.equal(view.user('u1')?.id, 'u1');
    await view.close();
    assert.equal(await view.closed(), null);
  } // asyncDispose after close: no error

  const nc2 = await nats.connect('view-lost');
  const view = await ControlPlaneView.open(nc2, { bucket });
  t.after(() => view.close());
  await nc2.close();
  const err = await view.closed();
  assert.ok(err instanceof Error);
  assert.equal(err.name, 'UnavailableError');
  assert.equal(view.user('u1')?.id, 'u1', 'keeps answering from its last state');
});

test('waitForRevision: a write of this process is in the view once it resolves true; a revision never written times out false', async (t) => {
  const { store, openView } = await setup(t);
  const view = await openView();
  const revision = await store.create('device', device('acme', 'ryw1', null));
  assert.equal(await view.waitForRevision(revision, 5_000), true);
  assert.equal(view.get('device', 'acme', 'ryw1')?.value.id, 'ryw1');
  assert.equal(await view.waitForRevision(revision, 0), true, 'already there: at once');
  const started = Date.now();
  assert.equal(await view.waitForRevision(revision + 1_000, 100), false);
  assert.ok(Date.now() - started >= 90);
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Account, App, Enterprise, Plan, User } from '../domain.js';
import { uniqueName, withNats } from '../testing/natsFixture.js';
import { until } from '../testing/until.js';
import { ConflictError, ControlPlaneError, InvalidKeyError, NotFoundError } from './errors.js';
import { ControlPlaneStore } from './store.js';

const nats = await withNats();

const NOW = '2026-01-01T00:00:00.000Z';
const user = (enterprise_id: string, id: string, name = id): User => ({ id, enterprise_id, name, email: `${id}@${enterprise_id}.example` });

async function openStore(): Promise<ControlPlaneStore> {
  // One server per file; one bucket per test keeps tests independent.
  return ControlPlaneStore.open(await nats.connect(), { bucket: uniqueName('cp') });
}

test('create, get and list keep enterprises apart', async () => {
  const store = await openStore();
  await store.create('user', user('acme', 'u1'));
  await store.create('user', user('acme', 'u2'));
  await store.create('user', user('globex', 'u1', 'Globex one'));

  const got = await store.get('user', 'acme', 'u1');
  assert.deepEqual(got?.value, user('acme', 'u1'));
  assert.ok(got !== null && got.revision > 0);
  assert.equal((await store.get('user', 'globex', 'u1'))?.value.name, 'Globex one');
  assert.equal(await store.get('user', 'initech', 'u1'), null);

  const acme = await store.list('user', 'acme');
  assert.deepEqual(
    acme.map((e) => [e.scope, e.id, e.key]),
    [
      ['acme', 'u1', 'user.acme.u1'],
      ['acme', 'u2', 'user.acme.u2'],
    ],
  );
  assert.deepEqual(
    (await store.list('user', 'globex')).map((e) => e.value.name),
    ['Globex one'],
  );
  assert.equal((await store.list('user')).length, 3);
  assert.deepEqual(await store.list('user', 'initech'), []);
  assert.deepEqual(await store.list('role', 'acme'), []);
});

test('create fails with ConflictError when the key exists, and does not overwrite', async () => {
  const store = await openStore();
  const rev = await store.create('user', user('acme', 'u1', 'first'));
  await assert.rejects(store.create('user', user('acme', 'u1', 'second')), (err: unknown) => {
    assert.ok(err instanceof ConflictError);
    assert.ok(err instanceof ControlPlaneError);
    assert.equal(err.code, 'conflict');
    assert.equal(err.name, 'ConflictError');
    assert.equal(err.key, 'user.acme.u1');
    assert.ok(err.cause instanceof Error, 'keeps the JetStream error as cause');
    return true;
  });
  assert.deepEqual(await store.get('user', 'acme', 'u1'), { value: user('acme', 'u1', 'first'), revision: rev });
});

test('update needs the current revision; a stale one fails and does not overwrite', async () => {
  const store = await openStore();
  const r1 = await store.create('user', user('acme', 'u1', 'v1'));
  const r2 = await store.update('user', user('acme', 'u1', 'v2'), r1);
  assert.ok(r2 > r1);

  await assert.rejects(store.update('user', user('acme', 'u1', 'stale'), r1), (err: unknown) => {
    assert.ok(err instanceof ConflictError);
    assert.equal(err.expectedRevision, r1);
    assert.match(err.message, /no longer at revision/);
    return true;
  });
  assert.deepEqual(await store.get('user', 'acme', 'u1'), { value: user('acme', 'u1', 'v2'), revision: r2 });

  // Two writers racing from the same read: exactly one wins.
  const results = await Promise.allSettled([
    store.update('user', user('acme', 'u1', 'writer A'), r2),
    store.update('user', user('acme', 'u1', 'writer B'), r2),
  ]);
  assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
  const loser = results.find((r) => r.status === 'rejected');
  assert.ok(loser?.status === 'rejected' && loser.reason instanceof ConflictError);
  const winner = results.findIndex((r) => r.status === 'fulfilled');
  assert.equal((await store.get('user', 'acme', 'u1'))?.value.name, winner === 0 ? 'writer A' : 'writer B');
});

test('update of a key that was never written is a conflict', async () => {
  const store = await openStore();
  await assert.rejects(store.update('user', user('acme', 'ghost'), 1), ConflictError);
  await assert.rejects(store.update('user', user('acme', 'ghost'), 0), RangeError);
});

test('delete, with and without an expected revision', async () => {
  const store = await openStore();
  const r1 = await store.create('user', user('acme', 'u1'));
  const r2 = await store.update('user', user('acme', 'u1', 'renamed'), r1);

  await assert.rejects(store.delete('user', 'acme', 'u1', r1), ConflictError);
  assert.equal((await store.get('user', 'acme', 'u1'))?.value.name, 'renamed', 'stale delete left it in place');

  await store.delete('user', 'acme', 'u1', r2);
  assert.equal(await store.get('user', 'acme', 'u1'), null);
  assert.deepEqual(await store.list('user', 'acme'), []);
  await assert.rejects(store.delete('user', 'acme', 'u1'), (err: unknown) => err instanceof NotFoundError && err.code === 'not_found');

  // A deleted entity can be created again.
  await store.create('user', user('acme', 'u1', 'again'));
  await store.delete('user', 'acme', 'u1');
  assert.equal(await store.get('user', 'acme', 'u1'), null);
});

test('afterWrite sees every write with its revision, a delete with its marker, before the write returns', async () => {
  const seen: number[] = [];
  let held: (() => void) | undefined;
  const store = await ControlPlaneStore.open(await nats.connect(), {
    bucket: uniqueName('cp'),
    afterWrite: async (revision) => {
      seen.push(revision);
      if (revision === 2) await new Promise<void>((resolve) => (held = resolve));
    },
  });
  const r1 = await store.create('user', user('acme', 'u1'));
  let updated = false;
  const update = store.update('user', user('acme', 'u1', 'renamed'), r1).then((r) => ((updated = true), r));
  await until(() => held !== undefined, 2_000, 'the update in afterWrite');
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(updated, false, 'the write waits for afterWrite');
  held!();
  const r2 = await update;
  const r3 = await store.upsert('user', user('acme', 'u2'));
  await store.delete('user', 'acme', 'u1', r2);
  await assert.rejects(store.delete('user', 'acme', 'u1'), NotFoundError);
  assert.deepEqual(seen, [r1, r2, r3, r3 + 1], 'the refused delete and the conflict are not reported');
  await assert.rejects(store.create('user', user('acme', 'u2')), ConflictError);
  assert.equal(seen.length, 4);
});

test('upsert, global kinds, enterprises and accounts', async () => {
  const store = await openStore();
  const plan: Plan = { id: 'pro', name: 'Pro', auto_remediation: true, retention_days: 90 };
  const app: App = { id: 'tiktok', name: 'TikTok', category: 'social' };
  const acme: Enterprise = { id: 'acme', name: 'Acme', plan_id: 'pro', timezone: 'America/New_York' };
  await store.upsert('plan', plan);
  await store.upsert('plan', { ...plan, retention_days: 30 });
  await store.upsert('app', app);
  await store.upsert('enterprise', acme);
  assert.equal((await store.get('plan', '_global', 'pro'))?.value.retention_days, 30);
  assert.deepEqual(
    (await store.list('app')).map((e) => e.value),
    [app],
  );
  assert.deepEqual((await store.get('enterprise', 'acme', 'acme'))?.value, acme);

  const admin: Account = {
    username: 'admin@acme',
    display_name: 'Acme admin',
    role: 'enterprise_admin',
    enterprise_id: 'acme',
    carrier_id: null,
    password_hash: 'scrypt$…',
    created_at: NOW,
  };
  const operator: Account = { ...admin, username: 'ops@att', role: 'carrier_operator', enterprise_id: null, carrier_id: 'att' };
  await store.create('account', admin);
  await store.create('account', operator);
  assert.deepEqual((await store.get('account', 'acme', 'admin@acme'))?.value, admin);
  assert.deepEqual((await store.get('account', '_carrier', 'ops@att'))?.value, operator);
  assert.deepEqual(
    (await store.list('account', 'acme')).map((e) => e.id),
    ['admin@acme'],
  );
});

test('values that cannot form a key are rejected before anything is written', async () => {
  const store = await openStore();
  await assert.rejects(store.create('user', user('acme', 'has.dot')), InvalidKeyError);
  await assert.rejects(store.create('user', user('_global', 'u1')), InvalidKeyError);
  assert.equal((await store.kv.status()).values, 0);
});

// Compile-time checks: the kind decides the value type.
export function typeChecks(store: ControlPlaneStore, plan: Plan): void {
  // @ts-expect-error a Plan is not a User
  void store.create('user', plan);
  // @ts-expect-error unknown kind
  void store.get('widget', 'acme', 'x');
}

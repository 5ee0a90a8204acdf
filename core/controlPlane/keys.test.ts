import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Account, Plan, User } from '../domain.js';
import { InvalidKeyError } from './errors.js';
import { CARRIER_SCOPE, entityKey, enterpriseOfRef, GLOBAL_SCOPE, KINDS, parseEntityKey, refOf, scopeFilter } from './keys.js';

const NOW = '2026-01-01T00:00:00.000Z';
const account = (username: string, enterprise_id: string | null, carrier_id: string | null): Account => ({
  username,
  display_name: username,
  role: enterprise_id === null ? 'carrier_operator' : 'enterprise_admin',
  enterprise_id,
  carrier_id,
  password_hash: 'x',
  created_at: NOW,
});

test('each kind derives its scope and id from the value', () => {
  const plan: Plan = { id: 'pro', name: 'Pro', auto_remediation: true, retention_days: 90 };
  assert.equal(entityKey(refOf('plan', plan)), 'plan._global.pro');
  assert.equal(entityKey(refOf('enterprise', { id: 'acme', name: 'Acme', plan_id: 'pro', timezone: 'UTC' })), 'enterprise.acme.acme');
  assert.equal(entityKey(refOf('user', { id: 'u1', enterprise_id: 'acme', name: 'U', email: 'u@a' })), 'user.acme.u1');
  assert.equal(entityKey(refOf('user_role', { enterprise_id: 'acme', user_id: 'u1', role_id: 'sales', assigned_at: NOW })), 'user_role.acme.u1.sales');
  assert.equal(entityKey(refOf('role_policy', { enterprise_id: 'acme', role_id: 'sales', policy_id: 'p1', assigned_at: NOW })), 'role_policy.acme.sales.p1');
  assert.deepEqual(refOf('tower', { id: 't1', location: 'NYC', region: 'ne', lat: 0, lon: 0, carrier_ids: [], status: 'active' }), {
    kind: 'tower',
    scope: GLOBAL_SCOPE,
    id: 't1',
  });
});

test('account usernames are base64url in the key and plain everywhere else', () => {
  const ref = refOf('account', account('admin@acme', 'acme', null));
  assert.deepEqual(ref, { kind: 'account', scope: 'acme', id: 'admin@acme' });
  const key = entityKey(ref);
  assert.equal(key, `account.acme.${Buffer.from('admin@acme').toString('base64url')}`);
  assert.match(key, /^[A-Za-z0-9_.-]+$/);
  assert.deepEqual(parseEntityKey(key), ref);

  const op = refOf('account', account('ops@att.example', null, 'att'));
  assert.equal(op.scope, CARRIER_SCOPE);
  assert.equal(enterpriseOfRef(op), null);
  assert.throws(() => refOf('account', account('nobody', null, null)), InvalidKeyError);
});

test('parseEntityKey inverts entityKey and ignores foreign keys', () => {
  for (const key of ['user.acme.u1', 'user_role.acme.u1.sales', 'plan._global.pro', 'enterprise.acme.acme']) {
    const ref = parseEntityKey(key);
    assert.ok(ref !== null, key);
    assert.equal(entityKey(ref), key);
  }
  for (const key of ['other.acme.x', 'user.acme', 'user.acme.u1.extra', 'user_role.acme.u1', 'plan.acme.pro', 'enterprise.a.b', 'user._x.u1']) {
    assert.equal(parseEntityKey(key), null, key);
  }
});

test('invalid ids and reserved scopes are rejected with InvalidKeyError', () => {
  const u = (enterprise_id: string, id = 'u1'): User => ({ id, enterprise_id, name: 'n', email: 'e' });
  for (const bad of [u('a.b'), u('acme', 'u*'), u('acme', ''), u('_global'), u('acme', 'x'.repeat(65))]) {
    assert.throws(
      () => refOf('user', bad),
      (err: unknown) => err instanceof InvalidKeyError && err.code === 'invalid_key' && err.name === 'InvalidKeyError',
    );
  }
  assert.throws(() => entityKey({ kind: 'plan', scope: 'acme', id: 'p' }), /plan scope must be '_global'/);
  assert.throws(() => entityKey({ kind: 'enterprise', scope: 'acme', id: 'globex' }), /its own scope/);
});

test('scope filters list one enterprise, or every scope', () => {
  assert.equal(scopeFilter('user', 'acme'), 'user.acme.>');
  assert.equal(scopeFilter('user'), 'user.>');
  assert.equal(scopeFilter('app', GLOBAL_SCOPE), 'app._global.>');
  assert.throws(() => scopeFilter('user', '>'), InvalidKeyError);
  assert.equal(KINDS.length, 14);
});

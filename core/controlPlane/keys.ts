/**
 * KV keys of the control plane: `<kind>.<scope>.<id>`, one bucket for every entity.
 *
 * - scope is the owning enterprise id for enterprise-owned kinds (an enterprise is its own
 *   scope), `_global` for shared kinds, and `_carrier` for carrier-operator accounts, so that
 *   `user.acme.>` lists one enterprise's users and nothing else;
 * - composite ids keep their parts as separate tokens: `user_role.acme.<user>.<role>`;
 * - account ids are usernames such as `admin@acme`, which KV keys cannot hold: the key carries
 *   them base64url-encoded, and everything outside this file sees the plain username.
 */
import {
  ID_PATTERN,
  type Account,
  type Action,
  type App,
  type Carrier,
  type Device,
  type Enterprise,
  type Plan,
  type Policy,
  type PolicyRule,
  type Role,
  type RolePolicy,
  type Tower,
  type User,
  type UserRole,
} from '../domain.js';
import { InvalidKeyError } from './errors.js';

export const KINDS = [
  'plan',
  'enterprise',
  'carrier',
  'tower',
  'app',
  'action',
  'user',
  'role',
  'user_role',
  'role_policy',
  'policy',
  'policy_rule',
  'device',
  'account',
] as const;
export type Kind = (typeof KINDS)[number];

/** The entity type stored under each kind: `create('user', u)` is checked against `User`. */
export interface EntityByKind {
  plan: Plan;
  enterprise: Enterprise;
  carrier: Carrier;
  tower: Tower;
  app: App;
  action: Action;
  user: User;
  role: Role;
  user_role: UserRole;
  role_policy: RolePolicy;
  policy: Policy;
  policy_rule: PolicyRule;
  device: Device;
  account: Account;
}
export type Entity<K extends Kind = Kind> = EntityByKind[K];

export const GLOBAL_SCOPE = '_global';
export const CARRIER_SCOPE = '_carrier';

/** How a kind is scoped. */
export type ScopeType = 'global' | 'enterprise' | 'account';
export const KIND_SCOPE: Readonly<Record<Kind, ScopeType>> = Object.freeze({
  plan: 'global',
  carrier: 'global',
  tower: 'global',
  app: 'global',
  action: 'global',
  enterprise: 'enterprise',
  user: 'enterprise',
  role: 'enterprise',
  user_role: 'enterprise',
  role_policy: 'enterprise',
  policy: 'enterprise',
  policy_rule: 'enterprise',
  device: 'enterprise',
  account: 'account',
});

/** Where one entity lives. `id` is the natural id (a username for accounts, `a.b` for composites). */
export interface EntityRef<K extends Kind = Kind> {
  readonly kind: K;
  readonly scope: string;
  readonly id: string;
}

type Locator<K extends Kind> = (v: EntityByKind[K]) => { scope: string; id: string };

/** One function per kind: where a value of that kind is stored. */
const LOCATORS: { readonly [K in Kind]: Locator<K> } = {
  plan: (v) => ({ scope: GLOBAL_SCOPE, id: v.id }),
  carrier: (v) => ({ scope: GLOBAL_SCOPE, id: v.id }),
  tower: (v) => ({ scope: GLOBAL_SCOPE, id: v.id }),
  app: (v) => ({ scope: GLOBAL_SCOPE, id: v.id }),
  action: (v) => ({ scope: GLOBAL_SCOPE, id: v.id }),
  enterprise: (v) => ({ scope: v.id, id: v.id }),
  user: (v) => ({ scope: v.enterprise_id, id: v.id }),
  role: (v) => ({ scope: v.enterprise_id, id: v.id }),
  user_role: (v) => ({ scope: v.enterprise_id, id: `${v.user_id}.${v.role_id}` }),
  role_policy: (v) => ({ scope: v.enterprise_id, id: `${v.role_id}.${v.policy_id}` }),
  policy: (v) => ({ scope: v.enterprise_id, id: v.id }),
  policy_rule: (v) => ({ scope: v.enterprise_id, id: v.id }),
  device: (v) => ({ scope: v.enterprise_id, id: v.id }),
  account: (v) => ({ scope: v.enterprise_id ?? CARRIER_SCOPE, id: v.username }),
};

const COMPOSITE: ReadonlySet<Kind> = new Set<Kind>(['user_role', 'role_policy']);
const KIND_SET: ReadonlySet<string> = new Set(KINDS);
const MAX_USERNAME = 256;

export function isKind(s: string): s is Kind {
  return KIND_SET.has(s);
}

/** Composite id of a role assignment: `<user_id>.<role_id>`. */
export function userRoleId(userId: string, roleId: string): string {
  return `${userId}.${roleId}`;
}

/** Composite id of a policy assignment: `<role_id>.<policy_id>`. */
export function rolePolicyId(roleId: string, policyId: string): string {
  return `${roleId}.${policyId}`;
}

/** Where `value` of `kind` is stored. @throws {InvalidKeyError} when it cannot form a key. */
export function refOf<K extends Kind>(kind: K, value: EntityByKind[K]): EntityRef<K> {
  if (!isKind(kind)) throw new InvalidKeyError(`unknown kind '${String(kind)}'`);
  if (typeof value !== 'object' || value === null) throw new InvalidKeyError(`${kind}: value must be an object`);
  const { scope, id } = (LOCATORS[kind] as Locator<K>)(value);
  if (kind === 'account') {
    const a = value as Account;
    if (a.enterprise_id == null && a.carrier_id == null) {
      throw new InvalidKeyError(`account '${a.username}' needs an enterprise_id or a carrier_id`);
    }
  }
  const ref = { kind, scope, id };
  entityKey(ref); // validates
  return ref;
}

function checkToken(what: string, token: unknown): void {
  if (typeof token !== 'string' || !ID_PATTERN.test(token)) {
    throw new InvalidKeyError(`${what} must match ${String(ID_PATTERN)}, got ${JSON.stringify(token)}`);
  }
}

function checkScope(kind: Kind, scope: unknown): void {
  const type = KIND_SCOPE[kind];
  if (type === 'global') {
    if (scope !== GLOBAL_SCOPE) throw new InvalidKeyError(`${kind} scope must be '${GLOBAL_SCOPE}', got ${JSON.stringify(scope)}`);
    return;
  }
  if (type === 'account' && scope === CARRIER_SCOPE) return;
  checkToken(`${kind} enterprise id`, scope);
  // Leading `_` is reserved for the pseudo-scopes, so no enterprise can shadow them.
  if ((scope as string).startsWith('_')) {
    throw new InvalidKeyError(`enterprise ids must not start with '_' (reserved), got ${JSON.stringify(scope)}`);
  }
}

function checkId(kind: Kind, id: unknown): void {
  if (kind === 'account') {
    if (typeof id !== 'string' || id.length === 0 || id.length > MAX_USERNAME) {
      throw new InvalidKeyError(`account username must be 1–${MAX_USERNAME} characters, got ${JSON.stringify(id)}`);
    }
    return;
  }
  if (COMPOSITE.has(kind)) {
    const parts = typeof id === 'string' ? id.split('.') : [];
    if (parts.length !== 2) throw new InvalidKeyError(`${kind} id must be '<a>.<b>', got ${JSON.stringify(id)}`);
    parts.forEach((p) => checkToken(`${kind} id part`, p));
    return;
  }
  checkToken(`${kind} id`, id);
}

/** The KV key of an entity. @throws {InvalidKeyError} */
export function entityKey(ref: EntityRef): string {
  const { kind, scope, id } = ref;
  if (!isKind(kind)) throw new InvalidKeyError(`unknown kind '${String(kind)}'`);
  checkScope(kind, scope);
  checkId(kind, id);
  if (kind === 'enterprise' && scope !== id) {
    throw new InvalidKeyError(`an enterprise is its own scope: scope '${scope}' ≠ id '${id}'`);
  }
  const idPart = kind === 'account' ? Buffer.from(id, 'utf8').toString('base64url') : id;
  return `${kind}.${scope}.${idPart}`;
}

/** The entity a KV key names, or null for keys that are not ours. */
export function parseEntityKey(key: string): EntityRef | null {
  const tokens = key.split('.');
  const [kind, scope, ...rest] = tokens;
  if (kind === undefined || scope === undefined || !isKind(kind)) return null;
  let id: string;
  if (kind === 'account') {
    if (rest.length !== 1 || rest[0] === undefined || !/^[A-Za-z0-9_-]+$/.test(rest[0])) return null;
    id = Buffer.from(rest[0], 'base64url').toString('utf8');
  } else {
    if (rest.length !== (COMPOSITE.has(kind) ? 2 : 1)) return null;
    id = rest.join('.');
  }
  const ref: EntityRef = { kind, scope, id };
  try {
    entityKey(ref);
  } catch {
    return null;
  }
  return ref;
}

/** The default scope of a kind when none is given: `_global` for global kinds. */
export function defaultScope(kind: Kind): string | undefined {
  return KIND_SCOPE[kind] === 'global' ? GLOBAL_SCOPE : undefined;
}

/** KV filter for every entry of `kind` in `scope` (or in every scope): `user.acme.>`. */
export function scopeFilter(kind: Kind, scope?: string): string {
  if (!isKind(kind)) throw new InvalidKeyError(`unknown kind '${String(kind)}'`);
  if (scope === undefined) return `${kind}.>`;
  checkScope(kind, scope);
  return `${kind}.${scope}.>`;
}

/** The enterprise an entity belongs to, or null for global and carrier-operator entries. */
export function enterpriseOfRef(ref: EntityRef): string | null {
  const type = KIND_SCOPE[ref.kind];
  if (type === 'global') return null;
  if (type === 'account' && ref.scope === CARRIER_SCOPE) return null;
  return ref.scope;
}

/**
 * An in-memory copy of the whole control-plane bucket, fed by a KV watch, that every pipeline
 * and api process holds: lookups are synchronous Map reads, and a change anywhere reaches
 * every view within milliseconds, with a coalesced notification naming what changed.
 */
import type { KV, KvWatchEntry } from '@nats-io/kv';
import type { NatsConnection, QueuedIterator } from '@nats-io/transport-node';
import type { Account, Action, App, Carrier, Device, Enterprise, Plan, Policy, PolicyRule, Role, RolePolicy, Tower, User, UserRole } from '../domain.js';
import { ClosedError, ControlPlaneError, UnavailableError } from './errors.js';
import { defaultScope, enterpriseOfRef, entityKey, GLOBAL_SCOPE, parseEntityKey, type Entity, type EntityByKind, type EntityRef, type Kind } from './keys.js';
import { decodeEntry, openControlBucket, type ControlBucketOptions, type StoredEntry, type Versioned } from './store.js';

export const DEFAULT_OPEN_TIMEOUT_MS = 10_000;
/** Changes arriving within this many ms are reported in one notification. */
export const DEFAULT_COALESCE_MS = 10;

/** What changed since the previous notification. */
export interface ControlPlaneChange {
  /** The view's version after these changes. */
  readonly version: number;
  readonly kinds: ReadonlySet<Kind>;
  /**
   * Enterprises whose own entries changed, plus those on a changed plan. Global changes
   * (carriers, towers, apps, actions) name no enterprise: see `global`.
   */
  readonly enterprises: ReadonlySet<string>;
  /** A global entity (plan, carrier, tower, app, action) or a carrier-operator account changed. */
  readonly global: boolean;
}
export type ChangeListener = (change: ControlPlaneChange) => void;

export interface ControlPlaneViewOptions extends ControlBucketOptions {
  /** How long `open()` waits for the initial values. @default 10000 */
  openTimeoutMs?: number;
  /** @default 10 */
  coalesceMs?: number;
  /** Called when a listener throws or a stored value is unreadable. @default process.emitWarning */
  onError?: (err: unknown) => void;
}

type Entry = Versioned<Entity>;
type ScopeMap = Map<string, Map<string, Entry>>;

function isKv(source: NatsConnection | KV): source is KV {
  return typeof (source as Partial<KV>).watch === 'function';
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}

function byRevisionDesc(a: Entry, b: Entry): number {
  return b.revision - a.revision;
}

/**
 * Values returned by the getters are deeply frozen and shared: copy before changing one.
 * Ids of enterprise-owned entities are expected to be unique across enterprises; getters
 * that take an optional `enterpriseId` are exact with it and search every enterprise without.
 */
export class ControlPlaneView implements AsyncDisposable {
  readonly #kv: KV;
  readonly #coalesceMs: number;
  readonly #onError: (err: unknown) => void;
  readonly #data = new Map<Kind, ScopeMap>();
  /** id → entries in every scope, per kind; rebuilt lazily for kinds that changed. */
  readonly #byId = new Map<Kind, Map<string, Entry[]>>();
  readonly #dirty = new Set<Kind>();
  #userRolesByUser = new Map<string, UserRole[]>();
  #rolePoliciesByPolicy = new Map<string, RolePolicy[]>();
  #rolePoliciesByRole = new Map<string, RolePolicy[]>();
  #rulesByPolicy = new Map<string, PolicyRule[]>();

  #version = 0;
  #revision = 0;
  readonly #revisionWaiters = new Set<{ revision: number; resolve: (ok: boolean) => void }>();
  #loaded = false;
  #resolveLoaded!: () => void;
  readonly #loadedPromise = new Promise<void>((r) => {
    this.#resolveLoaded = r;
  });
  #iter: QueuedIterator<KvWatchEntry> | undefined;
  #loop: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #resolveClosed!: (err: Error | null) => void;
  readonly #closedPromise = new Promise<Error | null>((r) => {
    this.#resolveClosed = r;
  });

  readonly #listeners = new Set<ChangeListener>();
  #pendingKinds = new Set<Kind>();
  #pendingEnterprises = new Set<string>();
  #pendingGlobal = false;
  #flushTimer: NodeJS.Timeout | undefined;

  private constructor(kv: KV, options: ControlPlaneViewOptions) {
    this.#kv = kv;
    this.#coalesceMs = options.coalesceMs ?? DEFAULT_COALESCE_MS;
    this.#onError = options.onError ?? ((err) => process.emitWarning(err instanceof Error ? err : new Error(String(err))));
  }

  /**
   * Watches the bucket and resolves once every current value is loaded (at once for an empty
   * bucket). Given a connection it opens the bucket (creating it if missing); given a KV, it
   * uses that one. Either way the caller keeps ownership of the connection.
   */
  static async open(source: NatsConnection | KV, options: ControlPlaneViewOptions = {}): Promise<ControlPlaneView> {
    const kv = isKv(source) ? source : await openControlBucket(source, options);
    const view = new ControlPlaneView(kv, options);
    await view.#start(options.openTimeoutMs ?? DEFAULT_OPEN_TIMEOUT_MS);
    return view;
  }

  async #start(timeoutMs: number): Promise<void> {
    let lastSeq: number;
    let empty: boolean;
    try {
      // nats.js v3 watch() gives no "initial values done" marker (isUpdate turns true on the
      // last initial entry, and never shows for an empty bucket), so: if the stream is empty we
      // are loaded now; otherwise we are loaded at the first entry with nothing pending
      // (delta 0) or at/after the stream's last sequence as it was before the watch began.
      const st = await this.#kv.status();
      lastSeq = st.streamInfo.state.last_seq;
      empty = st.values === 0;
      this.#iter = await this.#kv.watch({ key: '>' });
    } catch (err) {
      this.#resolveClosed(err instanceof Error ? err : new Error(String(err)));
      throw new UnavailableError(`cannot watch control plane: ${err instanceof Error ? err.message : String(err)}`, {
        cause: err,
      });
    }
    if (empty) this.#markLoaded();
    this.#loop = this.#run(this.#iter, lastSeq);

    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      this.#loadedPromise.then(() => 'loaded' as const),
      this.#closedPromise.then((err) => err ?? new ClosedError('control-plane view')),
      new Promise<'timeout'>((r) => {
        timer = setTimeout(() => r('timeout'), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (outcome === 'loaded') return;
    await this.close();
    if (outcome === 'timeout') {
      throw new UnavailableError(`control-plane view: initial values not loaded within ${timeoutMs} ms`);
    }
    throw outcome instanceof ControlPlaneError
      ? outcome
      : new UnavailableError(`control-plane watch failed while loading: ${outcome.message}`, { cause: outcome });
  }

  async #run(iter: QueuedIterator<KvWatchEntry>, lastSeq: number): Promise<void> {
    try {
      for await (const e of iter) {
        this.#apply(e);
        if (!this.#loaded && (e.delta === 0 || e.revision >= lastSeq)) this.#markLoaded();
      }
      if (this.#closing === undefined) {
        this.#resolveClosed(new UnavailableError('control-plane watch ended (connection closed?)'));
      }
    } catch (err) {
      this.#resolveClosed(err instanceof Error ? err : new Error(String(err)));
    }
  }

  #markLoaded(): void {
    this.#loaded = true;
    this.#resolveLoaded();
  }

  #apply(e: KvWatchEntry): void {
    this.#revision = Math.max(this.#revision, e.revision);
    for (const w of this.#revisionWaiters) if (this.#revision >= w.revision) w.resolve(true);
    const ref = parseEntityKey(e.key);
    if (ref === null) return; // a key that is not ours: leave it alone
    let value: Entity | null = null;
    try {
      value = decodeEntry(e.key, e);
    } catch (err) {
      this.#onError(err); // unreadable: treat as absent rather than keep a stale value
    }
    const before = this.#entry(ref.kind, ref.scope, ref.id);
    if (value === null) {
      if (before === undefined) return;
      this.#scopeMap(ref.kind, ref.scope).delete(ref.id);
    } else {
      this.#scopeMap(ref.kind, ref.scope).set(ref.id, { value: deepFreeze(value), revision: e.revision });
    }
    this.#version++;
    this.#dirty.add(ref.kind);
    if (this.#loaded) this.#noteChange(ref);
  }

  #scopeMap(kind: Kind, scope: string): Map<string, Entry> {
    let scopes = this.#data.get(kind);
    if (scopes === undefined) this.#data.set(kind, (scopes = new Map()));
    let ids = scopes.get(scope);
    if (ids === undefined) scopes.set(scope, (ids = new Map()));
    return ids;
  }

  #entry(kind: Kind, scope: string, id: string): Entry | undefined {
    return this.#data.get(kind)?.get(scope)?.get(id);
  }

  #noteChange(ref: EntityRef): void {
    this.#pendingKinds.add(ref.kind);
    const ent = enterpriseOfRef(ref);
    if (ent !== null) this.#pendingEnterprises.add(ent);
    else this.#pendingGlobal = true;
    if (ref.kind === 'plan') {
      // A plan's settings (auto-remediation, retention) apply to every enterprise on it.
      for (const e of this.list('enterprise', undefined)) if (e.plan_id === ref.id) this.#pendingEnterprises.add(e.id);
    }
    this.#flushTimer ??= setTimeout(() => this.#flush(), this.#coalesceMs);
  }

  #flush(): void {
    this.#flushTimer = undefined;
    const change: ControlPlaneChange = {
      version: this.#version,
      kinds: this.#pendingKinds,
      enterprises: this.#pendingEnterprises,
      global: this.#pendingGlobal,
    };
    this.#pendingKinds = new Set();
    this.#pendingEnterprises = new Set();
    this.#pendingGlobal = false;
    for (const listener of [...this.#listeners]) {
      try {
        listener(change);
      } catch (err) {
        this.#onError(err);
      }
    }
  }

  // ---- lazily rebuilt indexes -------------------------------------------------------------

  #refresh(kind: Kind): void {
    if (!this.#dirty.has(kind) && this.#byId.has(kind)) return;
    this.#dirty.delete(kind);
    const byId = new Map<string, Entry[]>();
    for (const ids of this.#data.get(kind)?.values() ?? []) {
      for (const [id, entry] of ids) {
        const list = byId.get(id);
        if (list === undefined) byId.set(id, [entry]);
        else list.push(entry);
      }
    }
    for (const list of byId.values()) if (list.length > 1) list.sort(byRevisionDesc);
    this.#byId.set(kind, byId);
    if (kind === 'user_role') {
      this.#userRolesByUser = groupBy(this.list('user_role'), (v) => v.user_id);
    } else if (kind === 'role_policy') {
      const all = this.list('role_policy');
      this.#rolePoliciesByPolicy = groupBy(all, (v) => v.policy_id);
      this.#rolePoliciesByRole = groupBy(all, (v) => v.role_id);
    } else if (kind === 'policy_rule') {
      this.#rulesByPolicy = groupBy(this.list('policy_rule'), (v) => v.policy_id);
    }
  }

  /** Entries of `kind` with id `id` in every scope, newest first. */
  #allWithId<K extends Kind>(kind: K, id: string): Versioned<EntityByKind[K]>[] {
    this.#refresh(kind);
    return (this.#byId.get(kind)?.get(id) ?? []) as Versioned<EntityByKind[K]>[];
  }

  #scoped<K extends Kind>(kind: K, id: string, enterpriseId?: string): EntityByKind[K] | undefined {
    if (enterpriseId !== undefined) return this.get(kind, enterpriseId, id)?.value;
    return this.#allWithId(kind, id)[0]?.value;
  }

  // ---- generic access ---------------------------------------------------------------------

  /** Incremented on every applied change; compare to know whether derived data is stale. */
  get version(): number {
    return this.#version;
  }

  /** The highest KV revision seen. */
  get revision(): number {
    return this.#revision;
  }

  /**
   * Resolves true once the view has applied KV revision `revision` (a write of this process:
   * read your own writes), false after `timeoutMs` without it.
   */
  waitForRevision(revision: number, timeoutMs: number): Promise<boolean> {
    if (this.#revision >= revision) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter = {
        revision,
        resolve: (ok: boolean) => {
          clearTimeout(timer);
          this.#revisionWaiters.delete(waiter);
          resolve(ok);
        },
      };
      const timer = setTimeout(() => waiter.resolve(false), timeoutMs);
      this.#revisionWaiters.add(waiter);
    });
  }

  /**
   * Resolves true once the view has applied every write the bucket held when called (any
   * process's: read the writes of other nodes), false after `timeoutMs` or when the bucket
   * cannot be asked. One request to the bucket's leader.
   */
  async catchUp(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const last = await Promise.race([
      this.#kv.status().then(
        (st) => st.streamInfo.state.last_seq,
        () => null,
      ),
      new Promise<null>((resolve) => {
        timer = setTimeout(() => resolve(null), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (last === null) return false;
    return this.waitForRevision(last, Math.max(0, deadline - Date.now()));
  }

  /** One entry with its revision (an ETag), by its exact location. */
  get<K extends Kind>(kind: K, scope: string, id: string): Versioned<EntityByKind[K]> | undefined {
    return this.#entry(kind, scope, id) as Versioned<EntityByKind[K]> | undefined;
  }

  /** Entries of a kind in one scope (global kinds default to `_global`) or in all scopes. */
  entries<K extends Kind>(kind: K, scope: string | undefined = defaultScope(kind)): StoredEntry<K>[] {
    const scopes = this.#data.get(kind);
    if (scopes === undefined) return [];
    const out: StoredEntry<K>[] = [];
    const visit = (s: string, ids: Map<string, Entry>) => {
      for (const [id, e] of ids) {
        const ref = { kind, scope: s, id };
        out.push({ ...ref, key: entityKey(ref), value: e.value as EntityByKind[K], revision: e.revision });
      }
    };
    if (scope !== undefined) {
      const ids = scopes.get(scope);
      if (ids !== undefined) visit(scope, ids);
    } else {
      for (const [s, ids] of scopes) visit(s, ids);
    }
    return out;
  }

  /** Values of a kind in one scope (global kinds default to `_global`) or in all scopes. */
  list<K extends Kind>(kind: K, scope: string | undefined = defaultScope(kind)): EntityByKind[K][] {
    const scopes = this.#data.get(kind);
    if (scopes === undefined) return [];
    const maps = scope !== undefined ? [scopes.get(scope)] : [...scopes.values()];
    const out: EntityByKind[K][] = [];
    for (const ids of maps) if (ids !== undefined) for (const e of ids.values()) out.push(e.value as EntityByKind[K]);
    return out;
  }

  /** Number of entries of a kind (all scopes). */
  count(kind: Kind): number {
    let n = 0;
    for (const ids of this.#data.get(kind)?.values() ?? []) n += ids.size;
    return n;
  }

  // ---- typed getters ----------------------------------------------------------------------

  plan(id: string): Plan | undefined {
    return this.get('plan', GLOBAL_SCOPE, id)?.value;
  }
  carrier(id: string): Carrier | undefined {
    return this.get('carrier', GLOBAL_SCOPE, id)?.value;
  }
  tower(id: string): Tower | undefined {
    return this.get('tower', GLOBAL_SCOPE, id)?.value;
  }
  app(id: string): App | undefined {
    return this.get('app', GLOBAL_SCOPE, id)?.value;
  }
  action(id: string): Action | undefined {
    return this.get('action', GLOBAL_SCOPE, id)?.value;
  }
  enterprise(id: string): Enterprise | undefined {
    return this.get('enterprise', id, id)?.value;
  }
  /** The plan of an enterprise. */
  planOfEnterprise(enterpriseId: string): Plan | undefined {
    const e = this.enterprise(enterpriseId);
    return e === undefined ? undefined : this.plan(e.plan_id);
  }
  user(id: string, enterpriseId?: string): User | undefined {
    return this.#scoped('user', id, enterpriseId);
  }
  role(id: string, enterpriseId?: string): Role | undefined {
    return this.#scoped('role', id, enterpriseId);
  }
  policy(id: string, enterpriseId?: string): Policy | undefined {
    return this.#scoped('policy', id, enterpriseId);
  }
  policyRule(id: string, enterpriseId?: string): PolicyRule | undefined {
    return this.#scoped('policy_rule', id, enterpriseId);
  }
  /**
   * A device by its id, whichever enterprise registered it. Should two enterprises hold the
   * same device id, the most recently written entry wins.
   */
  device(id: string): Device | undefined {
    return this.#allWithId('device', id)[0]?.value;
  }
  /** A console account by username (`admin@acme`), enterprise or carrier operator. */
  account(username: string): Account | undefined {
    return this.#allWithId('account', username)[0]?.value;
  }

  usersOfEnterprise(enterpriseId: string): User[] {
    return this.list('user', enterpriseId);
  }
  rolesOfEnterprise(enterpriseId: string): Role[] {
    return this.list('role', enterpriseId);
  }
  policiesOfEnterprise(enterpriseId: string): Policy[] {
    return this.list('policy', enterpriseId);
  }
  rulesOfEnterprise(enterpriseId: string): PolicyRule[] {
    return this.list('policy_rule', enterpriseId);
  }
  devicesOfEnterprise(enterpriseId: string): Device[] {
    return this.list('device', enterpriseId);
  }
  accountsOfEnterprise(enterpriseId: string): Account[] {
    return this.list('account', enterpriseId);
  }

  /** Roles assigned to a user (assignments naming a missing role are skipped). */
  rolesOfUser(userId: string, enterpriseId?: string): Role[] {
    this.#refresh('user_role');
    return resolveAll(this.#userRolesByUser.get(userId), enterpriseId, (ur) => this.role(ur.role_id, ur.enterprise_id));
  }
  /** Roles a policy is assigned to. */
  rolesOfPolicy(policyId: string, enterpriseId?: string): Role[] {
    this.#refresh('role_policy');
    return resolveAll(this.#rolePoliciesByPolicy.get(policyId), enterpriseId, (rp) => this.role(rp.role_id, rp.enterprise_id));
  }
  /** Policies assigned to a role. */
  policiesOfRole(roleId: string, enterpriseId?: string): Policy[] {
    this.#refresh('role_policy');
    return resolveAll(this.#rolePoliciesByRole.get(roleId), enterpriseId, (rp) => this.policy(rp.policy_id, rp.enterprise_id));
  }
  /** Rules of a policy (enabled or not). */
  rulesOfPolicy(policyId: string, enterpriseId?: string): PolicyRule[] {
    this.#refresh('policy_rule');
    const rules = this.#rulesByPolicy.get(policyId) ?? [];
    return enterpriseId === undefined ? [...rules] : rules.filter((r) => r.enterprise_id === enterpriseId);
  }

  // ---- notifications and lifecycle --------------------------------------------------------

  /**
   * Calls `listener` after changes (not for the initial load), coalescing those that arrive
   * within `coalesceMs`. Returns the unsubscribe function.
   */
  onChange(listener: ChangeListener): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  /** Resolves when the view stops: null after close(), the error if the watch failed. */
  closed(): Promise<Error | null> {
    return this.#closedPromise;
  }

  /** Stops the watch. The view keeps answering from its last state. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#iter?.stop();
      await this.#loop;
      clearTimeout(this.#flushTimer);
      this.#flushTimer = undefined;
      this.#listeners.clear();
      this.#resolveClosed(null);
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function groupBy<T>(items: readonly T[], keyOf: (v: T) => string): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const v of items) {
    const k = keyOf(v);
    const list = m.get(k);
    if (list === undefined) m.set(k, [v]);
    else list.push(v);
  }
  return m;
}

function resolveAll<A extends { enterprise_id: string }, R>(
  links: readonly A[] | undefined,
  enterpriseId: string | undefined,
  resolve: (link: A) => R | undefined,
): R[] {
  const out: R[] = [];
  for (const link of links ?? []) {
    if (enterpriseId !== undefined && link.enterprise_id !== enterpriseId) continue;
    const r = resolve(link);
    if (r !== undefined) out.push(r);
  }
  return out;
}

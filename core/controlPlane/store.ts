/**
 * Typed reads and writes of control-plane entities in one JetStream KV bucket, with optimistic
 * concurrency on the KV revision: a write that names a stale revision fails with
 * {@link ConflictError} and never overwrites.
 */
import type { KV, KvEntry } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { isWrongLastSequence, openKvBucket, ReplicasUnavailableError } from '../nats/index.js';
import { ClosedError, ConflictError, ControlPlaneError, InvalidValueError, NotFoundError, UnavailableError } from './errors.js';
import { entityKey, refOf, scopeFilter, defaultScope, parseEntityKey, type EntityByKind, type EntityRef, type Kind } from './keys.js';

export const CONTROL_BUCKET = 'towerwatch-control';
/** Revisions kept per key: enough to see recent edits, small enough to not matter. */
export const DEFAULT_CONTROL_HISTORY = 5;
/** Concurrent gets while listing. */
const LIST_CONCURRENCY = 64;

export interface ControlBucketOptions {
  /** @default 'towerwatch-control' */
  bucket?: string;
  /** @default 5 */
  history?: number;
  /** Least replicas: 1 for one server, 3 or 5 in a cluster; an existing bucket with fewer is raised, never lowered. @default 1 */
  replicas?: number;
}

/**
 * Opens the control-plane bucket, creating it if missing (an existing one is used as it is,
 * its replicas raised to `replicas` when fewer).
 */
export async function openControlBucket(nc: NatsConnection, options: ControlBucketOptions = {}): Promise<KV> {
  const bucket = options.bucket ?? CONTROL_BUCKET;
  try {
    return await openKvBucket(nc, bucket, {
      history: options.history ?? DEFAULT_CONTROL_HISTORY,
      replicas: options.replicas ?? 1,
      description: 'towerwatch control plane: <kind>.<scope>.<id> → JSON',
    });
  } catch (err) {
    if (err instanceof ReplicasUnavailableError) throw err;
    throw new UnavailableError(`cannot open KV bucket ${bucket}: ${message(err)}`, { cause: err });
  }
}

export interface Versioned<T> {
  readonly value: T;
  /** KV revision: pass it back to update/delete; also usable as an ETag. */
  readonly revision: number;
}

export interface StoredEntry<K extends Kind = Kind> extends EntityRef<K>, Versioned<EntityByKind[K]> {
  readonly key: string;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Maps NATS failures to control-plane errors; our own errors pass through. */
function translate(err: unknown, key: string, expectedRevision: number): unknown {
  if (err instanceof ControlPlaneError) return err;
  if (isWrongLastSequence(err)) return new ConflictError(key, expectedRevision, { cause: err });
  return new UnavailableError(`${key}: ${message(err)}`, { cause: err });
}

/** `op()`, its failures {@link translate}d. */
async function translating<T>(key: string, expectedRevision: number, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    throw translate(err, key, expectedRevision);
  }
}

/** Parses a KV entry's JSON; null for delete markers. */
export function decodeEntry<K extends Kind>(key: string, entry: KvEntry): EntityByKind[K] | null {
  if (entry.operation !== 'PUT') return null;
  let value: unknown;
  try {
    value = entry.json();
  } catch (err) {
    throw new InvalidValueError(key, `not JSON (${message(err)})`, { cause: err });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidValueError(key, 'not a JSON object');
  }
  return value as EntityByKind[K];
}

function checkRevision(expectedRevision: number): void {
  if (!Number.isSafeInteger(expectedRevision) || expectedRevision < 1) {
    throw new RangeError(`expectedRevision must be a positive integer, got ${String(expectedRevision)}`);
  }
}

/**
 * Called with the revision of each write before the write returns: a process that serves reads
 * from its {@link ControlPlaneView} waits here until the view has it, so that what a request was
 * told is written is what the next request reads.
 */
export type AfterWrite = (revision: number) => Promise<void>;

export interface ControlStoreOptions extends ControlBucketOptions {
  afterWrite?: AfterWrite;
}

export class ControlPlaneStore {
  readonly kv: KV;
  readonly #afterWrite: AfterWrite | undefined;
  #closed = false;

  private constructor(kv: KV, afterWrite?: AfterWrite) {
    this.kv = kv;
    this.#afterWrite = afterWrite;
  }

  /** Opens (and if needed creates) the bucket. The store does not own `nc`. */
  static async open(nc: NatsConnection, options: ControlStoreOptions = {}): Promise<ControlPlaneStore> {
    return new ControlPlaneStore(await openControlBucket(nc, options), options.afterWrite);
  }

  /** Wraps a bucket opened elsewhere. */
  static fromKv(kv: KV): ControlPlaneStore {
    return new ControlPlaneStore(kv);
  }

  /** Stores a new entity. @throws {ConflictError} if its key exists. @returns the revision */
  async create<K extends Kind>(kind: K, value: EntityByKind[K]): Promise<number> {
    const key = this.#key(kind, value);
    // kv.create also succeeds over a deleted key: re-creating a deleted entity is allowed.
    return this.#written(await translating(key, 0, () => this.kv.create(key, JSON.stringify(value))));
  }

  /**
   * Replaces an entity if it is still at `expectedRevision`.
   * @throws {ConflictError} if it changed or was deleted since; nothing is written then.
   * @returns the new revision
   */
  async update<K extends Kind>(kind: K, value: EntityByKind[K], expectedRevision: number): Promise<number> {
    const key = this.#key(kind, value);
    checkRevision(expectedRevision);
    return this.#written(await translating(key, expectedRevision, () => this.kv.update(key, JSON.stringify(value), expectedRevision)));
  }

  /** Writes whatever is there (seeding, imports). @returns the new revision */
  async upsert<K extends Kind>(kind: K, value: EntityByKind[K]): Promise<number> {
    const key = this.#key(kind, value);
    return this.#written(await translating(key, 0, () => this.kv.put(key, JSON.stringify(value))));
  }

  /**
   * Deletes an entity (a KV delete marker; history stays until it ages out).
   * @throws {NotFoundError} if there is none; {@link ConflictError} if `expectedRevision` is stale.
   */
  async delete(kind: Kind, scope: string, id: string, expectedRevision?: number): Promise<void> {
    this.#open();
    const key = entityKey({ kind, scope, id });
    try {
      if (expectedRevision === undefined) {
        const current = await this.kv.get(key);
        if (current === null || current.operation !== 'PUT') throw new NotFoundError(key);
      } else {
        checkRevision(expectedRevision);
      }
      await this.kv.delete(key, expectedRevision === undefined ? undefined : { previousSeq: expectedRevision });
    } catch (err) {
      throw translate(err, key, expectedRevision ?? 0);
    }
    if (this.#afterWrite === undefined) return;
    // nats.js drops the delete's revision: the key's last entry is its marker (or a later write).
    const marker = await translating(key, 0, () => this.kv.get(key));
    if (marker !== null) await this.#written(marker.revision);
  }

  /** One entity with its revision, or null. */
  async get<K extends Kind>(kind: K, scope: string, id: string): Promise<Versioned<EntityByKind[K]> | null> {
    this.#open();
    const key = entityKey({ kind, scope, id });
    const entry = await translating(key, 0, () => this.kv.get(key));
    if (entry === null) return null;
    const value = decodeEntry<K>(key, entry);
    return value === null ? null : { value, revision: entry.revision };
  }

  /**
   * Every entity of `kind` in `scope` (global kinds default to `_global`; for other kinds an
   * undefined scope lists all scopes), sorted by scope then id.
   */
  async list<K extends Kind>(kind: K, scope: string | undefined = defaultScope(kind)): Promise<StoredEntry<K>[]> {
    this.#open();
    const filter = scopeFilter(kind, scope);
    const keys: string[] = [];
    try {
      for await (const k of await this.kv.keys(filter)) keys.push(k);
    } catch (err) {
      throw translate(err, filter, 0);
    }
    const out: StoredEntry<K>[] = [];
    for (let i = 0; i < keys.length; i += LIST_CONCURRENCY) {
      const chunk = keys.slice(i, i + LIST_CONCURRENCY);
      const entries = await Promise.all(
        chunk.map(async (key) => {
          const ref = parseEntityKey(key);
          if (ref === null || ref.kind !== kind) return null; // not ours: ignore
          const entry = await translating(key, 0, () => this.kv.get(key));
          if (entry === null) return null; // deleted since we listed the keys
          const value = decodeEntry<K>(key, entry);
          if (value === null) return null;
          const stored: StoredEntry<K> = { kind, scope: ref.scope, id: ref.id, key, value, revision: entry.revision };
          return stored;
        }),
      );
      for (const e of entries) if (e !== null) out.push(e);
    }
    return out.sort((a, b) => (a.scope === b.scope ? cmp(a.id, b.id) : cmp(a.scope, b.scope)));
  }

  /** Marks the store unusable. The connection belongs to the caller and stays open. */
  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #written(revision: number): Promise<number> {
    await this.#afterWrite?.(revision);
    return revision;
  }

  #open(): void {
    if (this.#closed) throw new ClosedError('control-plane store');
  }

  #key<K extends Kind>(kind: K, value: EntityByKind[K]): string {
    this.#open();
    return entityKey(refOf(kind, value));
  }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

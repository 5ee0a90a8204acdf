/**
 * A per-account request limit shared by every api node through a NATS KV bucket, without a
 * round trip per request: a node leases a slice of the account's window (5 % of the limit, at
 * least 1) with a compare-and-set on the account's entry and serves it from memory, leasing
 * again when it runs out. Nodes together never admit more than the limit; they admit less by
 * at most the slices still unused on other nodes when the window ends (≤ 5 % per node).
 *
 * A window starts with the account's first request and lasts `windowMs`, as the per-node
 * limiter did. The entry key carries the limit, so nodes configured with different limits
 * count apart rather than refuse each other's traffic.
 */
import { createHash } from 'node:crypto';
import type { KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { isWrongLastSequence, openKvBucket, reopening } from '../core/nats/index.js';

export const RATE_LIMIT_BUCKET = 'towerwatch-ratelimit';
/** Share of the limit leased at a time. */
const LEASE_FRACTION = 0.05;
/** Compare-and-set attempts before a lease gives up (contention of many nodes on one account). */
const MAX_CAS_ATTEMPTS = 10;

export interface SharedLimitOptions {
  nc: NatsConnection;
  /** Requests per window per account. */
  limit: number;
  /** @default 60000 */
  windowMs?: number;
  /** Least replicas of the bucket (raised, never lowered). @default 1 */
  replicas?: number;
  /** Epoch ms. @default Date.now */
  now?: () => number;
}

export type LimitDecision = { allowed: true; remaining: number } | { allowed: false; retryAfterMs: number };

/** The account's entry: the window's start (epoch ms) and the requests leased in it by all nodes. */
interface WindowEntry {
  s: number;
  u: number;
}

interface Slice {
  start: number;
  left: number;
  /** Leased by all nodes when this slice was taken: for the remaining count. */
  used: number;
}

export class SharedAccountLimit {
  readonly limit: number;
  readonly #windowMs: number;
  readonly #lease: number;
  readonly #now: () => number;
  readonly #kv: () => Promise<KV>;
  readonly #slices = new Map<string, Slice>();
  /** One lease in flight per account: concurrent requests wait for it. */
  readonly #leasing = new Map<string, Promise<void>>();
  /** Account → its entry's key (hashed once: a request costs a map lookup). */
  readonly #keys = new Map<string, string>();

  constructor(options: SharedLimitOptions) {
    this.limit = options.limit;
    this.#windowMs = options.windowMs ?? 60_000;
    this.#lease = Math.max(1, Math.floor(this.limit * LEASE_FRACTION));
    this.#now = options.now ?? Date.now;
    this.#kv = reopening(() =>
      openKvBucket(options.nc, RATE_LIMIT_BUCKET, {
        history: 1,
        replicas: options.replicas ?? 1,
        // An idle account's entry goes once its window is long over.
        ttl: 2 * this.#windowMs,
        description: 'towerwatch api: requests per account and window, leased by the api nodes',
        // A broker away fails a lease within a second (the caller then counts alone), not in 5.
        timeoutMs: 1_000,
        retryForMs: 0,
      }),
    );
    // Opened eagerly; a failure is reported by consume(), whose caller falls back; the next lease opens it again.
    this.#kv().catch(() => undefined);
  }

  /**
   * Counts one request of `account` against the limit of all nodes.
   * @throws the broker's error when no lease can be taken (the caller decides what to do then)
   */
  async consume(account: string): Promise<LimitDecision> {
    let key = this.#keys.get(account);
    if (key === undefined) {
      if (this.#keys.size >= 100_000) this.#keys.clear();
      key = `${this.limit}.${createHash('sha256').update(account).digest('base64url').slice(0, 22)}`;
      this.#keys.set(account, key);
    }
    for (;;) {
      const now = this.#now();
      const slice = this.#slices.get(key);
      if (slice !== undefined && now < slice.start + this.#windowMs) {
        if (slice.left > 0) {
          slice.left--;
          return { allowed: true, remaining: Math.max(0, this.limit - slice.used) + slice.left };
        }
        if (slice.used >= this.limit) return { allowed: false, retryAfterMs: slice.start + this.#windowMs - now };
      }
      let leasing = this.#leasing.get(key);
      if (leasing === undefined) {
        leasing = this.#takeLease(key).finally(() => this.#leasing.delete(key));
        this.#leasing.set(key, leasing);
      }
      await leasing;
    }
  }

  /** Takes the next slice of `key`'s window (or learns it is spent) into #slices. */
  async #takeLease(key: string): Promise<void> {
    const kv = await this.#kv();
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const now = this.#now();
      const entry = await kv.get(key);
      const current = entry?.operation === 'PUT' ? parseEntry(entry.string()) : null;
      const fresh = current === null || now >= current.s + this.#windowMs;
      const window: WindowEntry = fresh ? { s: now, u: 0 } : current;
      const take = Math.min(this.#lease, Math.max(0, this.limit - window.u));
      if (take === 0) {
        this.#slices.set(key, { start: window.s, left: 0, used: window.u });
        return;
      }
      const next = JSON.stringify({ s: window.s, u: window.u + take } satisfies WindowEntry);
      try {
        if (entry === null) await kv.create(key, next);
        else await kv.update(key, next, entry.revision);
      } catch (err) {
        if (isWrongLastSequence(err)) continue; // another node leased meanwhile: read again
        throw err;
      }
      this.#slices.set(key, { start: window.s, left: take, used: window.u + take });
      return;
    }
    throw new Error(`rate limit: ${MAX_CAS_ATTEMPTS} conflicting leases in a row on one account`);
  }
}

function parseEntry(text: string): WindowEntry | null {
  try {
    const v = JSON.parse(text) as Partial<WindowEntry>;
    return typeof v.s === 'number' && typeof v.u === 'number' ? { s: v.s, u: v.u } : null;
  } catch {
    return null;
  }
}

/**
 * Request rate limits:
 *
 * - every authenticated route: requests per minute per console account, shared by every api
 *   node on the same NATS ({@link SharedAccountLimit}: slices of the window leased through a KV
 *   bucket); while the broker is away each node falls back to counting alone
 *   (rate-limiter-flexible in memory), so the limit holds per node then;
 * - sign-in attempts per client address per minute, every attempt counted (password spraying);
 * - failed sign-ins per username *and* address: past the allowance (10 in 15 minutes) that pair
 *   waits, and each further failure doubles the wait (15 s, 30 s, 1 min, … at most 15 min);
 *   a success from that address clears it. The real user at another address is not affected;
 * - failed sign-ins per username from all addresses together: a much higher ceiling (100 in
 *   15 minutes), past which the username backs off the same way everywhere: a distributed guess
 *   at one account is slowed down, while one noisy address cannot lock its owner out.
 *
 * The sign-in limits stay per node: they guard password checks, which each node does itself.
 * A refused attempt is a 429 `rate_limited` with `Retry-After`; the password is not checked.
 */
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import type { NatsConnection } from '@nats-io/transport-node';
import type { LogLine } from '../core/log.js';
import { ApiError } from './errors.js';
import { SharedAccountLimit } from './sharedLimit.js';

export interface LimitOptions {
  /** Requests per minute per account. @default 100 */
  perAccountPerMinute?: number;
  /** Failed sign-ins per username and address per window before backing off. @default 10 */
  loginFailuresPerUserAddress?: number;
  /** Failed sign-ins per username from all addresses per window before backing off. @default 100 */
  loginFailuresPerUser?: number;
  /** Sign-in attempts per client address per minute. @default 30 */
  loginAttemptsPerAddress?: number;
  /** The window failures are counted in, seconds. @default 900 */
  loginFailureWindowSeconds?: number;
  /** First wait past an allowance, seconds; doubled by each further failure. @default 15 */
  loginBackoffBaseSeconds?: number;
  /** Longest wait, seconds. @default 900 */
  loginBackoffMaxSeconds?: number;
  /** Epoch ms. @default Date.now */
  now?: () => number;
}

/** How long a node counts alone after the shared limit failed, before asking it again. */
const SHARED_RETRY_MS = 5_000;

/** Where the per-account limit is shared with the other api nodes. */
export interface SharedLimitsOptions {
  nc: NatsConnection;
  /** Least replicas of the bucket. @default 1 */
  replicas?: number;
  log: LogLine;
}

function tooMany(what: string, retryAfterMs: number, limit: number): ApiError {
  const retryAfter = Math.max(1, Math.ceil(retryAfterMs / 1000));
  return new ApiError(
    429,
    'rate_limited',
    `${what}; retry in ${retryAfter} s`,
    { retry_after_seconds: retryAfter, limit },
    {
      'retry-after': String(retryAfter),
      'x-ratelimit-limit': String(limit),
      'x-ratelimit-remaining': '0',
    },
  );
}

interface FailureRecord {
  failures: number;
  /** When the last failure was (epoch ms): the count lapses a window after it. */
  last: number;
  /** No attempt is checked before this (epoch ms). */
  blockedUntil: number;
}

/** Failure counts with a growing wait past an allowance; bounded in memory. */
class FailureBackoff {
  readonly #records = new Map<string, FailureRecord>();
  constructor(
    readonly allowance: number,
    private readonly windowMs: number,
    private readonly baseMs: number,
    private readonly maxMs: number,
    private readonly maxKeys = 100_000,
  ) {}

  #current(key: string, now: number): FailureRecord | undefined {
    const r = this.#records.get(key);
    if (r !== undefined && now - r.last > this.windowMs && now >= r.blockedUntil) {
      this.#records.delete(key);
      return undefined;
    }
    return r;
  }

  /** Milliseconds this key must still wait (0: go ahead). */
  waitMs(key: string, now: number): number {
    const r = this.#current(key, now);
    return r === undefined ? 0 : Math.max(0, r.blockedUntil - now);
  }

  failed(key: string, now: number): void {
    let r = this.#current(key, now);
    if (r === undefined) {
      if (this.#records.size >= this.maxKeys) this.#prune(now);
      r = { failures: 0, last: now, blockedUntil: 0 };
      this.#records.set(key, r);
    }
    r.failures++;
    r.last = now;
    const past = r.failures - this.allowance;
    if (past >= 0) r.blockedUntil = now + Math.min(this.maxMs, this.baseMs * 2 ** Math.min(past, 30));
  }

  clear(key: string): void {
    this.#records.delete(key);
  }

  #prune(now: number): void {
    for (const [k, r] of this.#records) if (now - r.last > this.windowMs && now >= r.blockedUntil) this.#records.delete(k);
    // Still full (a flood of distinct keys): forget the oldest half.
    if (this.#records.size >= this.maxKeys) {
      let drop = this.#records.size / 2;
      for (const k of this.#records.keys()) {
        if (drop-- <= 0) break;
        this.#records.delete(k);
      }
    }
  }
}

export class RateLimits {
  readonly perAccount: number;
  readonly #accounts: RateLimiterMemory;
  readonly #loginAddress: RateLimiterMemory;
  readonly #loginAddressPoints: number;
  readonly #pair: FailureBackoff;
  readonly #user: FailureBackoff;
  readonly #now: () => number;
  readonly #shared: SharedAccountLimit | null;
  readonly #log: LogLine;
  /** The shared limit failed and the node counts alone until it answers again. */
  #alone = false;
  /** While alone, the shared limit is asked again from this time (epoch ms): a broker away costs no request a timeout. */
  #retrySharedAt = 0;

  constructor(options: LimitOptions = {}, shared?: SharedLimitsOptions) {
    this.perAccount = options.perAccountPerMinute ?? 100;
    this.#log = shared?.log ?? (() => {});
    this.#shared = shared
      ? new SharedAccountLimit({
          nc: shared.nc,
          limit: this.perAccount,
          replicas: shared.replicas ?? 1,
          ...(options.now === undefined ? {} : { now: options.now }),
        })
      : null;
    this.#loginAddressPoints = options.loginAttemptsPerAddress ?? 30;
    this.#accounts = new RateLimiterMemory({ points: this.perAccount, duration: 60 });
    this.#loginAddress = new RateLimiterMemory({ points: this.#loginAddressPoints, duration: 60 });
    const windowMs = (options.loginFailureWindowSeconds ?? 15 * 60) * 1000;
    const baseMs = (options.loginBackoffBaseSeconds ?? 15) * 1000;
    const maxMs = (options.loginBackoffMaxSeconds ?? 15 * 60) * 1000;
    this.#pair = new FailureBackoff(options.loginFailuresPerUserAddress ?? 10, windowMs, baseMs, maxMs);
    this.#user = new FailureBackoff(options.loginFailuresPerUser ?? 100, windowMs, baseMs, maxMs);
    this.#now = options.now ?? Date.now;
  }

  /** Counts one request of `username`, on every node together when shared. @throws {ApiError} 429 */
  async account(username: string): Promise<{ remaining: number }> {
    if (this.#shared !== null && (!this.#alone || Date.now() >= this.#retrySharedAt)) {
      let decision;
      try {
        decision = await this.#shared.consume(username);
      } catch (err) {
        if (!this.#alone)
          this.#log(`api: the shared rate limit is unavailable (${err instanceof Error ? err.message : String(err)}); counting on this node alone`);
        this.#alone = true;
        this.#retrySharedAt = Date.now() + SHARED_RETRY_MS;
      }
      if (decision !== undefined) {
        if (this.#alone) this.#log('api: the shared rate limit answers again');
        this.#alone = false;
        if (!decision.allowed) throw tooMany(`more than ${this.perAccount} requests per minute from this account`, decision.retryAfterMs, this.perAccount);
        return { remaining: decision.remaining };
      }
    }
    try {
      const r = await this.#accounts.consume(username);
      return { remaining: r.remainingPoints };
    } catch (err) {
      if (err instanceof RateLimiterRes) throw tooMany(`more than ${this.perAccount} requests per minute from this account`, err.msBeforeNext, this.perAccount);
      throw err;
    }
  }

  /** Before checking a password: counts the attempt from `address`; refuses a pair or username that is backing off. @throws {ApiError} 429 */
  async beforeLogin(username: string, address: string): Promise<void> {
    try {
      await this.#loginAddress.consume(address);
    } catch (err) {
      if (err instanceof RateLimiterRes) throw tooMany('too many sign-in attempts from this address', err.msBeforeNext, this.#loginAddressPoints);
      throw err;
    }
    const now = this.#now();
    const pairWait = this.#pair.waitMs(pairKey(username, address), now);
    if (pairWait > 0) throw tooMany('too many failed sign-ins for this username from this address', pairWait, this.#pair.allowance);
    const userWait = this.#user.waitMs(username, now);
    if (userWait > 0) throw tooMany('too many failed sign-ins for this username', userWait, this.#user.allowance);
  }

  async loginFailed(username: string, address: string): Promise<void> {
    const now = this.#now();
    this.#pair.failed(pairKey(username, address), now);
    this.#user.failed(username, now);
  }

  /** A success clears its address's failures; the username's total stays until its window lapses. */
  async loginSucceeded(username: string, address: string): Promise<void> {
    this.#pair.clear(pairKey(username, address));
  }
}

const pairKey = (username: string, address: string): string => `${address}\n${username}`;

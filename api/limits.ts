/**
 * Request rate limits (rate-limiter-flexible, in memory): per console account on every
 * authenticated route, and, stricter, on sign-in attempts per username (failures only, so a
 * user who knows the password is not locked out by a noisy neighbour) and per client address
 * (every attempt, against password spraying). Limits are per api node: N nodes allow N times
 * as much, which is acceptable for abuse protection; a shared store would make them global.
 */
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { ApiError } from './errors.js';

export interface LimitOptions {
  /** Requests per minute per account. @default 100 */
  perAccountPerMinute?: number;
  /** Failed sign-ins per username per 15 minutes. @default 10 */
  loginFailuresPerUser?: number;
  /** Sign-in attempts per client address per minute. @default 30 */
  loginAttemptsPerAddress?: number;
}

function tooMany(what: string, res: RateLimiterRes, limit: number): ApiError {
  const retryAfter = Math.max(1, Math.ceil(res.msBeforeNext / 1000));
  return new ApiError(429, 'rate_limited', `${what}; retry in ${retryAfter} s`, { retry_after_seconds: retryAfter, limit }, {
    'retry-after': String(retryAfter),
    'x-ratelimit-limit': String(limit),
    'x-ratelimit-remaining': '0',
  });
}

export class RateLimits {
  readonly perAccount: number;
  readonly #accounts: RateLimiterMemory;
  readonly #loginUser: RateLimiterMemory;
  readonly #loginAddress: RateLimiterMemory;
  readonly #loginUserPoints: number;
  readonly #loginAddressPoints: number;

  constructor(options: LimitOptions = {}) {
    this.perAccount = options.perAccountPerMinute ?? 100;
    this.#loginUserPoints = options.loginFailuresPerUser ?? 10;
    this.#loginAddressPoints = options.loginAttemptsPerAddress ?? 30;
    this.#accounts = new RateLimiterMemory({ points: this.perAccount, duration: 60 });
    this.#loginUser = new RateLimiterMemory({ points: this.#loginUserPoints, duration: 15 * 60 });
    this.#loginAddress = new RateLimiterMemory({ points: this.#loginAddressPoints, duration: 60 });
  }

  /** Counts one request of `username`. @throws {ApiError} 429 */
  async account(username: string): Promise<{ remaining: number }> {
    try {
      const r = await this.#accounts.consume(username);
      return { remaining: r.remainingPoints };
    } catch (err) {
      if (err instanceof RateLimiterRes) throw tooMany(`more than ${this.perAccount} requests per minute from this account`, err, this.perAccount);
      throw err;
    }
  }

  /** Before checking a password: counts the attempt from `address`, refuses a locked username. */
  async beforeLogin(username: string, address: string): Promise<void> {
    try {
      await this.#loginAddress.consume(address);
    } catch (err) {
      if (err instanceof RateLimiterRes) throw tooMany('too many sign-in attempts from this address', err, this.#loginAddressPoints);
      throw err;
    }
    const user = await this.#loginUser.get(username);
    if (user !== null && user.consumedPoints >= this.#loginUserPoints) {
      throw tooMany('too many failed sign-ins for this username', user, this.#loginUserPoints);
    }
  }

  async loginFailed(username: string): Promise<void> {
    await this.#loginUser.penalty(username, 1);
  }

  async loginSucceeded(username: string): Promise<void> {
    await this.#loginUser.delete(username);
  }
}

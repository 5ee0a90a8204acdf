/**
 * Console sign-in: password check against the control plane's accounts, short-lived access
 * tokens and rotating refresh tokens (HS256 JWTs, via jose). Refresh tokens form a family per
 * sign-in, kept in a KV bucket: each refresh replaces the family's current token id with a
 * compare-and-set on the KV revision, so a token used twice (stolen, or raced) is detected and
 * revokes the whole family. Every api node watches the bucket, so a logout or a revocation
 * stops that family's access tokens on all of them at once.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import { z } from 'zod';
import type { KV, KvOptions, KvWatchEntry } from '@nats-io/kv';
import type { NatsConnection, QueuedIterator } from '@nats-io/transport-node';
import type { ControlPlaneView } from '../core/controlPlane/index.js';
import { isWrongLastSequence, openKvBucket } from '../core/nats/index.js';
import type { Account } from '../core/domain.js';
import { dummyPasswordHash, verifyPassword } from '../core/passwords.js';
import { retryFor } from '../core/retry.js';
import { decodeStoredJson } from '../core/storedJson.js';
import { ApiError } from './errors.js';
import { DEFAULT_ACCESS_TTL_SECONDS } from '../core/config.js';

export const AUTH_BUCKET = 'towerwatch-auth';
export const SESSIONS_BUCKET = 'towerwatch-sessions';
export const DEFAULT_REFRESH_TTL_SECONDS = 7 * 24 * 3600;
const ISSUER = 'towerwatch';
const AUDIENCE = 'towerwatch-api';
const SECRET_KEY = 'jwt-secret';
const SECRET_WAIT_MS = 30_000;
/** Verified access tokens remembered (WebCrypto HMAC verify costs ~120 µs; a Map hit, nothing). */
const VERIFIED_CACHE_SIZE = 20_000;

export interface TokenPair {
  access_token: string;
  refresh_token: string;
  token_type: 'Bearer';
  expires_in: number;
}

/** An authenticated request's account, as the control plane has it now. */
export interface Principal {
  readonly account: Account;
  readonly family: string;
  /** When the access token expires (epoch seconds). */
  readonly expiresAt: number;
}

const storedFamily = z.object({
  username: z.string(),
  current: z.string(),
  revoked: z.boolean(),
  reason: z.string().optional(),
  created_at: z.number(),
});
type Family = z.infer<typeof storedFamily>;

export interface AuthOptions {
  nc: NatsConnection;
  view: ControlPlaneView;
  /** null: generate one and keep it in KV, shared by every api node. */
  secret: string | null;
  accessTtlSeconds?: number;
  refreshTtlSeconds?: number;
  /** Epoch ms; tests move it forward to expire tokens. @default Date.now */
  now?: () => number;
  /** Least replicas of the auth buckets (raised, never lowered). @default 1 */
  replicas?: number;
  /** How long to keep trying for the shared signing key at start (ms). @default 30000 */
  secretWaitMs?: number;
}

/**
 * The signing key every api node shares: the one in KV, or a new one this node creates there.
 * Nodes starting together race for create(); the losers read the winner's. A create that failed
 * for another reason (a broker between leaders) or a read that does not see the key yet is
 * tried again, for `waitMs` at most.
 */
function sharedSecret(bucket: KV, waitMs: number): Promise<string> {
  return retryFor(
    `KV ${AUTH_BUCKET}/${SECRET_KEY}: no signing key`,
    async () => {
      const mine = randomBytes(48).toString('base64url');
      try {
        await bucket.create(SECRET_KEY, mine);
        return mine;
      } catch (err) {
        if (!isWrongLastSequence(err)) throw err;
      }
      const entry = await bucket.get(SECRET_KEY);
      if (entry?.operation === 'PUT' && entry.length > 0) return entry.string();
      throw new Error('another node holds the key, and it cannot be read yet');
    },
    { budgetMs: waitMs, initialDelayMs: 50, maxDelayMs: 1_000 },
  );
}

const unauthorized = (code: string, message: string): ApiError =>
  new ApiError(401, code, message, null, { 'www-authenticate': `Bearer error="invalid_token", error_description="${message}"` });

export class AuthService implements Disposable {
  readonly accessTtlSeconds: number;
  readonly refreshTtlSeconds: number;
  readonly #view: ControlPlaneView;
  readonly #key: Uint8Array;
  readonly #sessions: KV;
  readonly #now: () => number;
  readonly #revoked = new Set<string>();
  readonly #verified = new Map<string, { username: string; family: string; jti: string; exp: number }>();
  #watch: QueuedIterator<KvWatchEntry> | undefined;

  private constructor(view: ControlPlaneView, key: Uint8Array, sessions: KV, options: AuthOptions) {
    this.#view = view;
    this.#key = key;
    this.#sessions = sessions;
    this.#now = options.now ?? Date.now;
    this.accessTtlSeconds = options.accessTtlSeconds ?? DEFAULT_ACCESS_TTL_SECONDS;
    this.refreshTtlSeconds = options.refreshTtlSeconds ?? DEFAULT_REFRESH_TTL_SECONDS;
  }

  static async open(options: AuthOptions): Promise<AuthService> {
    // Created with `replicas`, or raised to it (never lowered) when it exists with fewer.
    const open = (bucket: string, config: Partial<KvOptions>): Promise<KV> => openKvBucket(options.nc, bucket, { ...config, replicas: options.replicas ?? 1 });
    const refreshTtl = options.refreshTtlSeconds ?? DEFAULT_REFRESH_TTL_SECONDS;
    let secret = options.secret;
    if (secret === null) {
      const bucket = await open(AUTH_BUCKET, { history: 1, description: 'towerwatch api: token signing key' });
      secret = await sharedSecret(bucket, options.secretWaitMs ?? SECRET_WAIT_MS);
    }
    // Families outlive their last refresh token by a minute, then age out of the bucket.
    const sessions = await open(SESSIONS_BUCKET, { history: 1, ttl: (refreshTtl + 60) * 1000, description: 'towerwatch api: refresh-token families' });
    const service = new AuthService(options.view, new TextEncoder().encode(secret), sessions, options);
    await service.#startWatch();
    return service;
  }

  async #startWatch(): Promise<void> {
    this.#watch = await this.#sessions.watch({ key: '>' });
    void (async () => {
      for await (const e of this.#watch!) {
        if (e.operation !== 'PUT') continue;
        if (decodeStoredJson(storedFamily, e.value)?.revoked === true) this.#revoked.add(e.key);
      }
    })().catch(() => undefined); // the watch ends with the connection; nothing to do then
  }

  /** @throws {ApiError} 401 `invalid_credentials` (same for an unknown user and a wrong password) */
  async login(username: string, password: string): Promise<TokenPair> {
    const account = this.#view.account(username);
    const ok = await verifyPassword(password, account?.password_hash ?? (await dummyPasswordHash()));
    if (account === undefined || !ok) throw new ApiError(401, 'invalid_credentials', 'wrong username or password');
    const family = randomUUID();
    const current = randomUUID();
    const value: Family = { username, current, revoked: false, created_at: this.#now() };
    await this.#sessions.create(family, JSON.stringify(value));
    return this.#issue(username, family, current);
  }

  /** Rotates a refresh token. @throws {ApiError} 401 for an invalid, expired, revoked or reused token */
  async refresh(refreshToken: string): Promise<TokenPair> {
    const claims = await this.#verify(refreshToken, 'refresh');
    const entry = await this.#sessions.get(claims.family);
    if (entry === null || entry.operation !== 'PUT') throw unauthorized('session_revoked', 'this session has ended; sign in again');
    // An entry that is not a family (written by hand, or by another version) ends the session: it cannot be rotated safely.
    const family = decodeStoredJson(storedFamily, entry.value);
    if (family === null || family.revoked) throw unauthorized('session_revoked', 'this session has ended; sign in again');
    if (family.current !== claims.jti) {
      await this.#revoke(claims.family, family, 'refresh token reused');
      throw unauthorized('refresh_token_reused', 'this refresh token was already used; the session is revoked for safety, sign in again');
    }
    if (this.#view.account(family.username) === undefined) throw unauthorized('account_gone', 'the account no longer exists');
    const next = randomUUID();
    try {
      await this.#sessions.update(claims.family, JSON.stringify({ ...family, current: next }), entry.revision);
    } catch {
      // Someone rotated it between our read and write: the same token used twice at once.
      await this.#revoke(claims.family, family, 'refresh token used concurrently');
      throw unauthorized('refresh_token_reused', 'this refresh token was already used; the session is revoked for safety, sign in again');
    }
    return this.#issue(family.username, claims.family, next);
  }

  /** Ends the family of a refresh token or of the calling access token. */
  async logout(family: string): Promise<void> {
    const entry = await this.#sessions.get(family);
    if (entry === null || entry.operation !== 'PUT') return;
    const stored = decodeStoredJson(storedFamily, entry.value) ?? { username: '', current: '', revoked: true, created_at: this.#now() };
    await this.#revoke(family, stored, 'logout');
  }

  /** Family of a refresh token, for logout; the token must be valid. */
  async familyOfRefreshToken(token: string): Promise<string> {
    return (await this.#verify(token, 'refresh')).family;
  }

  /** @throws {ApiError} 401 for a missing, malformed, expired or revoked token */
  async authenticate(authorization: string | undefined): Promise<Principal> {
    if (authorization === undefined || authorization === '')
      throw unauthorized('missing_token', 'this endpoint needs an Authorization: Bearer <access token> header');
    const m = /^Bearer\s+(\S+)$/i.exec(authorization);
    if (m?.[1] === undefined) throw unauthorized('invalid_token', 'the Authorization header must be "Bearer <access token>"');
    return this.verifyAccessToken(m[1]);
  }

  async verifyAccessToken(token: string): Promise<Principal> {
    let claims = this.#verified.get(token);
    if (claims === undefined || claims.exp <= this.nowSeconds()) {
      claims = await this.#verify(token, 'access');
      if (this.#verified.size >= VERIFIED_CACHE_SIZE) this.#verified.delete(this.#verified.keys().next().value!);
      this.#verified.set(token, claims);
    }
    if (this.#revoked.has(claims.family)) throw unauthorized('session_revoked', 'this session has ended; sign in again');
    const account = this.#view.account(claims.username);
    if (account === undefined) throw unauthorized('account_gone', 'the account no longer exists');
    return { account, family: claims.family, expiresAt: claims.exp };
  }

  isRevoked(family: string): boolean {
    return this.#revoked.has(family);
  }

  nowSeconds(): number {
    return Math.floor(this.#now() / 1000);
  }

  /** Stops watching the sessions bucket. Idempotent. */
  close(): void {
    this.#watch?.stop();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  async #revoke(id: string, family: Family, reason: string): Promise<void> {
    this.#revoked.add(id);
    await this.#sessions.put(id, JSON.stringify({ ...family, revoked: true, reason }));
  }

  async #issue(username: string, family: string, refreshJti: string): Promise<TokenPair> {
    const now = this.nowSeconds();
    const sign = (typ: 'access' | 'refresh', jti: string, ttl: number): Promise<string> =>
      new SignJWT({ typ, fam: family })
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setSubject(username)
        .setJti(jti)
        .setIssuedAt(now)
        .setExpirationTime(now + ttl)
        .sign(this.#key);
    return {
      access_token: await sign('access', randomUUID(), this.accessTtlSeconds),
      refresh_token: await sign('refresh', refreshJti, this.refreshTtlSeconds),
      token_type: 'Bearer',
      expires_in: this.accessTtlSeconds,
    };
  }

  async #verify(token: string, typ: 'access' | 'refresh'): Promise<{ username: string; family: string; jti: string; exp: number }> {
    const what = typ === 'access' ? 'access token' : 'refresh token';
    try {
      const { payload } = await jwtVerify(token, this.#key, {
        issuer: ISSUER,
        audience: AUDIENCE,
        algorithms: ['HS256'],
        currentDate: new Date(this.#now()),
      });
      if (
        payload['typ'] !== typ ||
        typeof payload['fam'] !== 'string' ||
        typeof payload.sub !== 'string' ||
        typeof payload.jti !== 'string' ||
        payload.exp === undefined
      ) {
        throw unauthorized('invalid_token', `not a towerwatch ${what}`);
      }
      return { username: payload.sub, family: payload['fam'], jti: payload.jti, exp: payload.exp };
    } catch (err) {
      if (err instanceof ApiError) throw err;
      if (err instanceof joseErrors.JWTExpired)
        throw unauthorized('token_expired', `the ${what} has expired${typ === 'access' ? '; refresh it' : '; sign in again'}`);
      throw unauthorized('invalid_token', `the ${what} is not valid`);
    }
  }
}

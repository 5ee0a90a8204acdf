/**
 * The page's side of the api: sign-in, the session kept in this tab (sessionStorage), the access
 * token refreshed a minute before it expires (and once more on a 401), and every failure turned
 * into an ApiFailure whose message can be shown as it is.
 */

export interface TokenPair {
  access_token: string;
  refresh_token: string;
  expires_in: number;
}

export interface Me {
  username: string;
  display_name: string;
  role: string;
  enterprise_id: string | null;
  carrier_id: string | null;
  can: { read: boolean; history: boolean; write: boolean };
  enterprises: Array<{ id: string; name: string; plan_id: string; auto_remediation: boolean }>;
}

/** A failed call: `message` is written for the user. */
export class ApiFailure extends Error {
  override readonly name = 'ApiFailure';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: unknown = null,
  ) {
    super(message);
  }
}

interface Stored {
  access: string;
  refresh: string;
  /** Epoch ms at which the access token expires. */
  expiresAt: number;
}

const STORAGE_KEY = 'towerwatch.session';
const REFRESH_BEFORE_MS = 60_000;

export class ApiClient {
  #session: Stored | null = null;
  #refreshing: Promise<void> | null = null;
  #timer: number | undefined;
  /** Called with each new access token (the live socket extends its session with it). */
  onToken: (token: string) => void = () => undefined;
  /** Called when the session ended and could not be renewed. */
  onSessionEnded: (why: string) => void = () => undefined;

  constructor(readonly base = '') {
    try {
      const raw = sessionStorage.getItem(STORAGE_KEY);
      if (raw !== null) this.#adopt(JSON.parse(raw) as Stored);
    } catch {
      sessionStorage.removeItem(STORAGE_KEY);
    }
  }

  get signedIn(): boolean {
    return this.#session !== null;
  }

  get token(): string | null {
    return this.#session?.access ?? null;
  }

  async login(username: string, password: string): Promise<void> {
    const pair = await this.#raw<TokenPair>('POST', '/auth/login', { username, password }, null);
    this.#store(pair);
  }

  async logout(): Promise<void> {
    const s = this.#session;
    this.#clear();
    if (s !== null) await this.#raw('POST', '/auth/logout', { refresh_token: s.refresh }, s.access).catch(() => undefined);
  }

  get<T>(path: string): Promise<T> {
    return this.call<T>('GET', path);
  }

  post<T>(path: string, body: unknown): Promise<T> {
    return this.call<T>('POST', path, body);
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    if (this.#session === null) throw new ApiFailure(401, 'signed_out', 'You are signed out.');
    if (this.#session.expiresAt - Date.now() < REFRESH_BEFORE_MS / 2) await this.refresh();
    try {
      return await this.#raw<T>(method, path, body, this.#session?.access ?? null);
    } catch (err) {
      if (!(err instanceof ApiFailure) || err.status !== 401) throw err;
      await this.refresh();
      return this.#raw<T>(method, path, body, this.#session?.access ?? null);
    }
  }

  /** One refresh at a time; a failure ends the session. */
  refresh(): Promise<void> {
    this.#refreshing ??= (async () => {
      const s = this.#session;
      if (s === null) throw new ApiFailure(401, 'signed_out', 'You are signed out.');
      try {
        this.#store(await this.#raw<TokenPair>('POST', '/auth/refresh', { refresh_token: s.refresh }, null));
      } catch (err) {
        if (err instanceof ApiFailure && err.status < 500 && err.status !== 429) {
          this.#clear();
          this.onSessionEnded('Your session ended. Sign in again.');
        }
        throw err;
      }
    })().finally(() => (this.#refreshing = null));
    return this.#refreshing;
  }

  async #raw<T>(method: string, path: string, body: unknown, token: string | null): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, {
        method,
        headers: { ...(token === null ? {} : { authorization: `Bearer ${token}` }), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiFailure(0, 'network', 'Cannot reach towerwatch. Check your connection; retrying helps once it is back.');
    }
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    let json: unknown = null;
    try {
      json = text === '' ? null : JSON.parse(text);
    } catch {
      // not JSON: reported below by status
    }
    if (!res.ok) {
      const e = (json as { error?: { code?: string; message?: string; details?: unknown } } | null)?.error;
      throw new ApiFailure(res.status, e?.code ?? 'http_error', e?.message ?? `The server answered ${res.status}.`, e?.details ?? null);
    }
    return json as T;
  }

  #store(pair: TokenPair): void {
    this.#adopt({ access: pair.access_token, refresh: pair.refresh_token, expiresAt: Date.now() + pair.expires_in * 1000 });
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(this.#session));
    this.onToken(pair.access_token);
  }

  #adopt(s: Stored): void {
    this.#session = s;
    clearTimeout(this.#timer);
    // Renewed ahead of expiry, so neither calls nor the socket ever see an expired token.
    this.#timer = window.setTimeout(() => void this.refresh().catch(() => undefined), Math.max(1000, s.expiresAt - Date.now() - REFRESH_BEFORE_MS));
  }

  #clear(): void {
    clearTimeout(this.#timer);
    this.#session = null;
    sessionStorage.removeItem(STORAGE_KEY);
  }
}

/** `?a=1&b=x` from the defined entries. */
export function qs(params: Record<string, string | number | undefined | null>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s === '' ? '' : `?${s}`;
}

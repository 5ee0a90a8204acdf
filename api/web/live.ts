/**
 * The page's `/ws/alerts` connection: typed messages handed to listeners by `type`, reconnects
 * with backoff (and a fresh token) when the connection drops or goes quiet, and the session
 * extended in place when the access token is renewed.
 */

import type { DiscoveredDeviceView } from '../../core/discoveredDevice.js';
import type { LiveMessage } from '../../core/liveMessages.js';

export type { AlertMessage, AlertsMessage, DeviceDiscoveredMessage, LiveMessage, RemediationMessage } from '../../core/liveMessages.js';

export type LiveState = 'connecting' | 'live' | 'reconnecting' | 'closed';

/** A discovered device as the worker announces it (`sightings` only in `GET /devices/discovered`). */
export type DiscoveredDevice = DiscoveredDeviceView & { sightings?: number };

type Listener<T> = (m: T) => void;
type ByType = { [K in LiveMessage['type']]: Extract<LiveMessage, { type: K }> };

const CLOSE_UNAUTHORIZED = 4001;
const CLOSE_TOKEN_EXPIRED = 4002;
const CLOSE_FORBIDDEN = 4003;
/** The server sends a heartbeat every 15 s: this much silence means the connection is gone. */
const QUIET_MS = 40_000;

export class LiveSocket {
  #ws: WebSocket | null = null;
  #state: LiveState = 'connecting';
  #attempt = 0;
  #closed = false;
  #quiet: number | undefined;
  #retry: number | undefined;
  readonly #listeners = new Map<string, Set<Listener<never>>>();
  readonly #stateListeners = new Set<(s: LiveState, why: string) => void>();

  constructor(
    private readonly token: () => string | null,
    private readonly enterpriseId: string | null,
    private readonly onUnauthorized: () => void,
  ) {
    this.#connect();
  }

  get state(): LiveState {
    return this.#state;
  }

  on<K extends keyof ByType>(type: K, fn: Listener<ByType[K]>): () => void {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  onState(fn: (s: LiveState, why: string) => void): () => void {
    this.#stateListeners.add(fn);
    return () => this.#stateListeners.delete(fn);
  }

  /** A renewed access token: the open connection carries on under it. */
  renew(token: string): void {
    if (this.#ws?.readyState === WebSocket.OPEN) this.#ws.send(JSON.stringify({ type: 'auth', token }));
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#retry);
    clearTimeout(this.#quiet);
    this.#ws?.close(1000);
    this.#set('closed', 'signed out');
  }

  #set(s: LiveState, why: string): void {
    this.#state = s;
    for (const fn of this.#stateListeners) fn(s, why);
  }

  #connect(): void {
    const token = this.token();
    if (token === null) return this.onUnauthorized();
    const url = new URL('/ws/alerts', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('token', token);
    // Alerts in batches: one message per pipeline batch instead of one per alert.
    url.searchParams.set('batch', '1');
    if (this.enterpriseId !== null) url.searchParams.set('enterprise_id', this.enterpriseId);
    const ws = new WebSocket(url);
    this.#ws = ws;
    this.#hush();
    ws.onmessage = (e) => {
      this.#hush();
      let m: LiveMessage;
      try {
        m = JSON.parse(String(e.data)) as LiveMessage;
      } catch {
        return;
      }
      if (m.type === 'subscribed') {
        this.#attempt = 0;
        this.#set('live', '');
      }
      const set = this.#listeners.get(m.type);
      if (set) for (const fn of set) (fn as Listener<LiveMessage>)(m);
    };
    ws.onclose = (e) => {
      if (this.#ws !== ws || this.#closed) return;
      clearTimeout(this.#quiet);
      if (e.code === CLOSE_UNAUTHORIZED || e.code === CLOSE_FORBIDDEN) {
        this.#set('closed', e.reason || 'not allowed');
        return this.onUnauthorized();
      }
      // Backoff 0.5 s doubling to 10 s; an expired token is simply renewed by reconnecting.
      const delay = e.code === CLOSE_TOKEN_EXPIRED ? 0 : Math.min(10_000, 500 * 2 ** this.#attempt++);
      this.#set('reconnecting', e.reason || 'connection lost');
      this.#retry = window.setTimeout(() => this.#connect(), delay);
    };
  }

  #hush(): void {
    clearTimeout(this.#quiet);
    this.#quiet = window.setTimeout(() => this.#ws?.close(), QUIET_MS);
  }
}

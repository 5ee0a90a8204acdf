/**
 * The notifier: sends each enterprise's violations to its notification outputs
 * (core/outputs.ts). It follows the alerts the pipeline publishes (`alerts.*`, one queue group,
 * so pipeline processes share them), picks the outputs that take each alert, opens or joins the
 * alert's dedup window (shared in KV by every process: one notification per user, app and
 * action per window), and posts the signed body with retries and backoff. Each delivery is
 * logged in the output's delivery history.
 *
 * Nothing here can slow the pipeline: the subscription only queues, deliveries run on their own
 * with a bound per output (beyond it they are dropped and counted), and every wait is bounded by
 * time. A receiver that fails is retried a few times, then the delivery is logged `failed`.
 */
import { randomUUID } from 'node:crypto';
import type { KV } from '@nats-io/kv';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { ALL_ALERTS_SUBJECT, decodeAlerts } from '../core/live.js';
import type { Alert } from '../core/liveMessages.js';
import { KeyedChain } from '../core/keyedChain.js';
import type { LogLine } from '../core/log.js';
import { isWrongLastSequence, openKvBucket } from '../core/nats/index.js';
import {
  decodeStoredOutput,
  DELIVERY_HEADER,
  type DedupWindow,
  decodeStoredWindow,
  type Delivery,
  MAX_DEDUP_WINDOW_SECONDS,
  notificationBody,
  openDeliveriesBucket,
  openOutputsBucket,
  OUTPUTS_BUCKET,
  type Output,
  outputKey,
  outputTakes,
  signature,
  SIGNATURE_HEADER,
  TIMESTAMP_HEADER,
  windowKey,
  WINDOWS_BUCKET,
} from '../core/outputs.js';

export const NOTIFIER_QUEUE = 'towerwatch-notifier';
/** Waits between attempts of one delivery (so at most this many + 1 attempts). */
export const RETRY_DELAYS_MS = [1_000, 2_000, 4_000, 8_000] as const;
export const ATTEMPT_TIMEOUT_MS = 5_000;
/** Deliveries of one output waiting or running at once; beyond it new ones are dropped. */
export const MAX_PENDING_PER_OUTPUT = 1_000;
/** Deliveries of one output running at once. */
export const CONCURRENCY_PER_OUTPUT = 4;

export interface NotifierOptions {
  nc: NatsConnection;
  log: LogLine;
  replicas?: number;
  /** @default RETRY_DELAYS_MS */
  retryDelaysMs?: readonly number[];
  /** @default ATTEMPT_TIMEOUT_MS */
  attemptTimeoutMs?: number;
  /** @default MAX_PENDING_PER_OUTPUT */
  maxPending?: number;
}

export interface NotifierCounters {
  /** Alerts read from the pipeline. */
  alerts: number;
  /** (alert, output) pairs an output took. */
  matched: number;
  /** Held back by a dedup window. */
  suppressed: number;
  delivered: number;
  failed: number;
  dropped: number;
  /** Attempts after the first. */
  retries: number;
}

interface OutputState {
  pending: number;
  running: number;
  queue: Array<() => Promise<void>>;
  lastDropLogged: number;
}

export class Notifier {
  readonly counters: NotifierCounters = { alerts: 0, matched: 0, suppressed: 0, delivered: 0, failed: 0, dropped: 0, retries: 0 };
  readonly #opts: NotifierOptions;
  readonly #outputs: KV;
  readonly #deliveries: KV;
  readonly #windows: KV;
  /** Every output, by enterprise, as the watch last saw it. */
  readonly #byEnterprise = new Map<string, Map<string, Output>>();
  readonly #state = new Map<string, OutputState>();
  readonly #inFlight = new Set<Promise<void>>();
  readonly #windowLocks = new KeyedChain();
  #watcher: { stop(): void } | null = null;
  #sub: Subscription | null = null;
  #closed = false;
  readonly #loaded: Promise<void>;
  #markLoaded!: () => void;

  private constructor(opts: NotifierOptions, outputs: KV, deliveries: KV, windows: KV) {
    this.#opts = opts;
    this.#outputs = outputs;
    this.#deliveries = deliveries;
    this.#windows = windows;
    this.#loaded = new Promise((r) => (this.#markLoaded = r));
  }

  static async start(opts: NotifierOptions): Promise<Notifier> {
    const replicas = opts.replicas ?? 1;
    const [outputs, deliveries, windows] = await Promise.all([
      openOutputsBucket(opts.nc, replicas),
      openDeliveriesBucket(opts.nc, replicas),
      openKvBucket(opts.nc, WINDOWS_BUCKET, {
        history: 1,
        replicas,
        ttl: MAX_DEDUP_WINDOW_SECONDS * 1000,
        description: "towerwatch: notification outputs' dedup windows per (user, app, action)",
        timeoutMs: 2_000,
      }),
    ]);
    const notifier = new Notifier(opts, outputs, deliveries, windows);
    void notifier.#watch();
    // The outputs as they are before the first alert is read (bounded: a slow bucket starts empty).
    await Promise.race([notifier.#loaded, new Promise((r) => setTimeout(r, 5_000).unref())]);
    notifier.#sub = opts.nc.subscribe(ALL_ALERTS_SUBJECT, {
      queue: NOTIFIER_QUEUE,
      callback: (err, msg) => {
        if (err === null) notifier.#take(msg.data);
      },
    });
    return notifier;
  }

  /** Resolves once nothing is being delivered (tests). */
  async idle(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#sub?.unsubscribe();
    this.#watcher?.stop();
    for (const s of this.#state.values()) s.queue.length = 0;
    await Promise.allSettled([...this.#inFlight]);
  }

  async #watch(): Promise<void> {
    while (!this.#closed) {
      try {
        // Loaded: the bucket is empty, or the watch has delivered what it held (delta 0).
        if ((await this.#outputs.status()).values === 0) this.#markLoaded();
        const watcher = await this.#outputs.watch({ key: '>' });
        this.#watcher = watcher;
        if (this.#closed) watcher.stop();
        for await (const e of watcher) {
          if (e.delta === 0) this.#markLoaded();
          const [enterprise = '', id = ''] = e.key.split('.');
          const outputs = this.#byEnterprise.get(enterprise) ?? new Map<string, Output>();
          this.#byEnterprise.set(enterprise, outputs);
          const output = e.operation === 'PUT' ? decodeStoredOutput(e.value) : null;
          if (output !== null) outputs.set(id, output);
          else outputs.delete(id);
          // Only the api writes the bucket, validated; an entry written otherwise is skipped,
          // not a reason to stop (and replay) the watch: every other output keeps working.
          if (e.operation === 'PUT' && output === null)
            this.#opts.log(`notifier: ${e.key} in ${OUTPUTS_BUCKET} is not an output; ignored until it is rewritten`, 'warn');
        }
      } catch (err) {
        if (!this.#closed) this.#opts.log(`notifier: watching the outputs failed (${errorText(err)}); again in 1 s`, 'warn');
      }
      if (!this.#closed) await new Promise((r) => setTimeout(r, 1000));
    }
  }

  #take(data: Uint8Array): void {
    const decoded = decodeAlerts(data);
    if (!decoded.ok) return;
    for (const alert of decoded.value) {
      this.counters.alerts++;
      for (const output of this.#byEnterprise.get(alert.enterprise_id)?.values() ?? []) {
        if (!outputTakes(output, alert)) continue;
        this.counters.matched++;
        this.#track(this.#notify(output, alert));
      }
    }
  }

  #track(p: Promise<void>): void {
    const tracked = p.catch((err: unknown) => this.#opts.log(`notifier: ${errorText(err)}`, 'warn')).finally(() => this.#inFlight.delete(tracked));
    this.#inFlight.add(tracked);
  }

  async #notify(output: Output, alert: Alert): Promise<void> {
    const suppressed = await this.#openWindow(output, alert);
    if (suppressed === null) {
      this.counters.suppressed++;
      return;
    }
    const state = this.#stateOf(output.output_id);
    if (state.pending >= (this.#opts.maxPending ?? MAX_PENDING_PER_OUTPUT)) {
      this.counters.dropped++;
      if (Date.now() - state.lastDropLogged > 10_000) {
        state.lastDropLogged = Date.now();
        await this.#record(output, {
          delivery_id: randomUUID(),
          alert_id: alert.alert_id,
          status: 'dropped',
          attempts: 0,
          http_status: null,
          error: 'too many deliveries waiting for this output',
          suppressed,
          at: Date.now(),
          duration_ms: 0,
        });
      }
      return;
    }
    state.pending++;
    await new Promise<void>((resolve) => {
      state.queue.push(async () => {
        try {
          await this.#deliver(output, alert, suppressed);
        } finally {
          state.pending--;
          resolve();
        }
      });
      this.#pump(state);
    });
  }

  #stateOf(outputId: string): OutputState {
    let s = this.#state.get(outputId);
    if (s === undefined) this.#state.set(outputId, (s = { pending: 0, running: 0, queue: [], lastDropLogged: 0 }));
    return s;
  }

  #pump(state: OutputState): void {
    while (state.running < CONCURRENCY_PER_OUTPUT && state.queue.length > 0) {
      const job = state.queue.shift() as () => Promise<void>;
      state.running++;
      void job().finally(() => {
        state.running--;
        this.#pump(state);
      });
    }
  }

  /**
   * Opens the alert's window for `output` (or it has none): the violations suppressed in the
   * window before, to report with this notification. Null: a window is open, this one is held back.
   */
  #openWindow(output: Output, alert: Alert): Promise<number | null> {
    if (output.dedup_window_seconds <= 0) return Promise.resolve(0);
    // One at a time per window in this process: a burst of one device's violations would
    // otherwise race each other's compare-and-set; other processes still may (retried below).
    const key = windowKey(output.output_id, alert);
    return this.#windowLocks.run(key, () => this.#casWindow(key, output.dedup_window_seconds * 1000));
  }

  async #casWindow(key: string, windowMs: number): Promise<number | null> {
    const now = Date.now();
    for (let attempt = 0; attempt < 50; attempt++) {
      // After a lost compare-and-set, a random pause: a process draining a burst for the same
      // window would otherwise win every round (at most ~2.5 s in all).
      if (attempt > 0) await new Promise((r) => setTimeout(r, Math.random() * 2 * attempt));
      const entry = await this.#windows.get(key);
      if (entry === null || entry.operation !== 'PUT') {
        try {
          await this.#windows.create(key, JSON.stringify({ since: now, suppressed: 0 } satisfies DedupWindow));
          return 0;
        } catch (err) {
          if (isWrongLastSequence(err) || /exists/i.test(errorText(err))) continue;
          throw err;
        }
      }
      // An entry that is not a window (written by hand, or by another version) is replaced by a new one.
      const w = decodeStoredWindow(entry.value);
      const open = w !== null && now - w.since < windowMs;
      const next: DedupWindow = open ? { since: w.since, suppressed: w.suppressed + 1 } : { since: now, suppressed: 0 };
      try {
        await this.#windows.update(key, JSON.stringify(next), entry.revision);
        return open ? null : (w?.suppressed ?? 0);
      } catch (err) {
        if (!isWrongLastSequence(err)) throw err;
      }
    }
    // Contended that long: another process is notifying for this window right now.
    return null;
  }

  async #deliver(output: Output, alert: Alert, suppressed: number): Promise<void> {
    const delays = this.#opts.retryDelaysMs ?? RETRY_DELAYS_MS;
    const deliveryId = randomUUID();
    const body = notificationBody(output, alert, suppressed);
    const started = Date.now();
    let status: number | null;
    let error: string | null;
    let attempts = 0;
    for (;;) {
      attempts++;
      const ts = Math.floor(Date.now() / 1000);
      try {
        const res = await fetch(output.url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'user-agent': 'towerwatch-notifier',
            [TIMESTAMP_HEADER]: String(ts),
            [SIGNATURE_HEADER]: signature(output.secret, ts, body),
            [DELIVERY_HEADER]: deliveryId,
          },
          body,
          redirect: 'error',
          signal: AbortSignal.timeout(this.#opts.attemptTimeoutMs ?? ATTEMPT_TIMEOUT_MS),
        });
        status = res.status;
        await res.body?.cancel().catch(() => undefined);
        error = res.ok ? null : `the receiver answered ${res.status}`;
        // A 4xx other than 408 and 429 will not change on a retry.
        if (res.ok || (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429)) break;
      } catch (err) {
        status = null;
        error = errorText(err);
      }
      const delay = delays[attempts - 1];
      if (delay === undefined || this.#closed) break;
      this.counters.retries++;
      await new Promise((r) => setTimeout(r, delay));
    }
    const delivered = error === null;
    if (delivered) this.counters.delivered++;
    else this.counters.failed++;
    await this.#record(output, {
      delivery_id: deliveryId,
      alert_id: alert.alert_id,
      status: delivered ? 'delivered' : 'failed',
      attempts,
      http_status: status,
      error,
      suppressed,
      at: Date.now(),
      duration_ms: Date.now() - started,
    });
  }

  async #record(output: Output, d: Delivery): Promise<void> {
    try {
      await this.#deliveries.put(outputKey(output.enterprise_id, output.output_id), JSON.stringify(d));
    } catch (err) {
      this.#opts.log(`notifier: could not log a delivery of ${output.output_id} (${errorText(err)})`, 'warn');
    }
  }
}

function errorText(err: unknown): string {
  if (err instanceof Error) return err.cause instanceof Error ? `${err.message}: ${err.cause.message}` : err.message;
  return String(err);
}

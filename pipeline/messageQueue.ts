/**
 * A read-ahead queue over a JetStream consume() iterator, for workers that process batches.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Consumer, ConsumerMessages, JsMsg } from '@nats-io/jetstream';

/**
 * A pull request the server lost: nats-server keeps a consumer's waiting pulls in its leader's
 * memory, so when that server dies (or a pull reaches a consumer still electing its leader) the
 * pull is gone, and the client learns it only from two missed idle heartbeats (30 s with a 30 s
 * expiry): messages wait at the server all that time. The queue asks the server instead.
 */
export interface StallCheck {
  /** The buffer empty and no message for this long: ask the server. */
  afterMs: number;
  /** Messages the server holds that this consumer could be sent now (0: none, or it may not send). */
  waiting: () => Promise<number>;
  /** Told before the pull is made again. */
  onRenew: (waiting: number) => void;
}

/** How long a starving queue waits before asking the server whether messages wait there. */
export const STALL_AFTER_MS = 5_000;

/** The {@link StallCheck} of `consumer`; a renewed pull is told to `log`. */
export function stallCheckOf(consumer: Consumer, log: (line: string) => void): StallCheck {
  return {
    afterMs: STALL_AFTER_MS,
    waiting: consumerWaiting(consumer),
    onRenew: (waiting) =>
      log(
        `${waiting.toLocaleString('en-US')} messages wait at the server and none came for ${STALL_AFTER_MS / 1000} s (a pull lost with a leader?); pulling again`,
      ),
  };
}

/** {@link StallCheck.waiting} of a JetStream pull consumer: pending messages, unless max_ack_pending holds them back. */
export function consumerWaiting(consumer: Consumer): () => Promise<number> {
  return async () => {
    const info = await consumer.info();
    const capped = info.config.max_ack_pending !== undefined && info.config.max_ack_pending > 0 && info.num_ack_pending >= info.config.max_ack_pending;
    return capped ? 0 : info.num_pending;
  };
}

/**
 * Messages read ahead from a consume() iterator, handed out in batches: `take` waits for a
 * first message, then up to `lingerMs` for the batch to fill. Reading stops while `capacity`
 * messages wait, which stops the consumer pulling more from the server. An iterator that fails
 * or ends before close() is reopened after a pause; one whose pull the server lost is reopened
 * at once ({@link StallCheck}).
 */
export class MessageQueue {
  readonly #buf: JsMsg[] = [];
  /** Who waits for the next message (take, waitFor): each leaves on a message or its timeout. */
  readonly #waiters = new Set<() => void>();
  #space: (() => void) | null = null;
  #ended = false;
  #messages: ConsumerMessages | null = null;
  readonly #pump: Promise<void>;
  /** When a message last came, or the iterator was (re)opened (performance.now). */
  #lastAt = performance.now();
  #renewing = false;
  #checking = false;
  readonly #stallTimer: NodeJS.Timeout | null = null;

  constructor(
    open: () => Promise<ConsumerMessages>,
    readonly capacity: number,
    onError: (err: Error) => void,
    stall?: StallCheck,
  ) {
    this.#pump = (async () => {
      while (!this.#ended) {
        try {
          this.#messages = await open();
          this.#lastAt = performance.now();
          for await (const m of this.#messages) {
            this.#lastAt = performance.now();
            this.#buf.push(m);
            this.#notify();
            while (this.#buf.length >= this.capacity && !this.#ended) await new Promise<void>((r) => (this.#space = r));
            if (this.#ended) break;
          }
          if (this.#renewing) {
            this.#renewing = false;
            continue;
          }
          if (!this.#ended) throw new Error('the consumer stopped delivering');
        } catch (err) {
          this.#renewing = false;
          if (this.#ended) break;
          onError(err instanceof Error ? err : new Error(String(err)));
          await sleep(500);
        }
      }
    })();
    if (stall !== undefined) {
      this.#stallTimer = setInterval(() => void this.#checkStall(stall), Math.max(100, stall.afterMs / 2));
      this.#stallTimer.unref();
    }
  }

  async #checkStall(stall: StallCheck): Promise<void> {
    if (this.#checking || this.#ended || this.#renewing || this.#buf.length > 0 || performance.now() - this.#lastAt < stall.afterMs) return;
    this.#checking = true;
    try {
      const waiting = await stall.waiting();
      // Still starving after the answer: a message that came meanwhile means the pull works.
      if (waiting > 0 && this.#buf.length === 0 && performance.now() - this.#lastAt >= stall.afterMs && !this.#ended) {
        stall.onRenew(waiting);
        this.#renew();
      }
    } catch {
      // The server cannot say now (it may be electing a leader): the next check asks again.
    } finally {
      this.#checking = false;
    }
  }

  /** Ends the current iterator (what it already holds is still read) and opens a new one: a new pull. */
  #renew(): void {
    const messages = this.#messages;
    if (messages === null) return;
    this.#renewing = true;
    this.#lastAt = performance.now();
    messages.stop();
  }

  #notify(): void {
    for (const wake of [...this.#waiters]) wake();
  }

  #wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#waiters.add(done);
    });
  }

  /** Messages read and not taken yet. */
  get size(): number {
    return this.#buf.length;
  }

  /** Resolves once `n` messages wait, or after `ms`, or at close. */
  async waitFor(n: number, ms: number): Promise<void> {
    const until = performance.now() + ms;
    while (this.#buf.length < n && !this.#ended) {
      const left = until - performance.now();
      if (left <= 0) return;
      await this.#wait(left);
    }
  }

  /** Up to `max` messages: [] when none came within a second or `stopped()` turned true. */
  async take(max: number, lingerMs: number, stopped: () => boolean): Promise<JsMsg[]> {
    if (this.#buf.length === 0) await this.#wait(1000);
    if (this.#buf.length === 0 || stopped()) return [];
    const until = performance.now() + lingerMs;
    while (this.#buf.length < max && !stopped()) {
      const left = until - performance.now();
      if (left <= 0) break;
      await this.#wait(left);
    }
    const batch = this.#buf.splice(0, max);
    const space = this.#space;
    this.#space = null;
    space?.();
    return batch;
  }

  forEach(fn: (m: JsMsg) => void): void {
    this.#buf.forEach(fn);
  }

  /** Stops reading and closes the consumer; returns what was read and not taken. */
  async close(): Promise<JsMsg[]> {
    this.#ended = true;
    if (this.#stallTimer !== null) clearInterval(this.#stallTimer);
    this.#space?.();
    this.#notify();
    await this.#messages?.close().catch(() => undefined);
    await this.#pump;
    return this.#buf.splice(0);
  }
}

/** nak on a connection closed meanwhile throws; the message comes back after ack_wait anyway. */
export function nakQuietly(m: JsMsg, delayMs?: number): void {
  try {
    m.nak(delayMs);
  } catch {
    // redelivered after ack_wait
  }
}

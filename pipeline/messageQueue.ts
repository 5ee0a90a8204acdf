/**
 * A read-ahead queue over a JetStream consume() iterator, for workers that process batches.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ConsumerMessages, JsMsg } from '@nats-io/jetstream';

/**
 * Messages read ahead from a consume() iterator, handed out in batches: `take` waits for a
 * first message, then up to `lingerMs` for the batch to fill. Reading stops while `capacity`
 * messages wait, which stops the consumer pulling more from the server. An iterator that fails
 * or ends before close() is reopened after a pause.
 */
export class MessageQueue {
  readonly #buf: JsMsg[] = [];
  /** Who waits for the next message (take, waitFor): each leaves on a message or its timeout. */
  readonly #waiters = new Set<() => void>();
  #space: (() => void) | null = null;
  #ended = false;
  #messages: ConsumerMessages | null = null;
  readonly #pump: Promise<void>;

  constructor(
    open: () => Promise<ConsumerMessages>,
    readonly capacity: number,
    onError: (err: Error) => void,
  ) {
    this.#pump = (async () => {
      while (!this.#ended) {
        try {
          this.#messages = await open();
          for await (const m of this.#messages) {
            this.#buf.push(m);
            this.#notify();
            while (this.#buf.length >= this.capacity && !this.#ended) await new Promise<void>((r) => (this.#space = r));
            if (this.#ended) break;
          }
          if (!this.#ended) throw new Error('the consumer stopped delivering');
        } catch (err) {
          if (this.#ended) break;
          onError(err instanceof Error ? err : new Error(String(err)));
          await sleep(500);
        }
      }
    })();
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

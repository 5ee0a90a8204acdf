/**
 * The one lifecycle of the pipeline's JetStream consumers (the pipeline, the remediator,
 * discovery), each of which runs one loop until it is closed: close() stops it once (a second
 * call gets the same promise), closed() says when it has ended or that its loop failed, and
 * `await using` closes it.
 */
export abstract class ConsumerLoop implements AsyncDisposable {
  #loop: Promise<void> = Promise.resolve();
  #closing: Promise<void> | null = null;
  #stopping = false;
  #closeStarted: (closing: Promise<void>) => void = () => undefined;
  /** Settles as the first close() does. */
  readonly #closeEnded = new Promise<void>((resolve) => (this.#closeStarted = resolve));

  constructor() {
    // A failed close() is the caller's to handle, whether or not anyone asked for closed().
    this.#closeEnded.catch(() => undefined);
  }

  /** True once close() was called: the loop ends at its next turn. */
  protected get stopping(): boolean {
    return this.#stopping;
  }

  /** The loop, from the component's start(). */
  protected follow(loop: Promise<void>): void {
    this.#loop = loop;
  }

  /** Wakes a loop that waits for input, so that it sees `stopping`. */
  protected async interrupt(): Promise<void> {}

  /** What remains once the loop has ended (work in flight, threads). */
  protected async release(): Promise<void> {}

  /**
   * Resolves once close() has finished; rejects as soon as the loop fails. The loop does not
   * end on its own: bad data is dead-lettered, a failing batch retried, an outage waited out.
   */
  closed(): Promise<void> {
    return Promise.all([this.#loop, this.#closeEnded]).then(() => undefined);
  }

  /** Stops taking messages, finishes what is in flight, then releases the rest. Idempotent. */
  close(): Promise<void> {
    if (this.#closing === null) {
      this.#closing = (async () => {
        this.#stopping = true;
        await this.interrupt();
        await this.#loop.catch(() => undefined);
        await this.release();
      })();
      this.#closeStarted(this.#closing);
    }
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

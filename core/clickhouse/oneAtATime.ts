/**
 * Calls into the embedded engine, one at a time per connection, held in JavaScript.
 *
 * chdb runs each call on a libuv thread-pool thread (4 by default), and a connection runs one
 * statement at a time: ten queued queries would hold all four threads, three of them waiting
 * on the connection. The pool is also where file writes (the insert spool), scrypt (sign-in)
 * and WebCrypto (tokens) run, each step of them queued behind every engine call. Holding the
 * queue here keeps at most one pool thread per connection busy, and throughput is the same,
 * since the connection serializes the calls anyway.
 */
export class OneAtATime {
  #tail: Promise<unknown> = Promise.resolve();
  #waiting = 0;

  /** Runs `call` once every call handed in before it has settled; settles as `call` does. */
  run<T>(call: () => Promise<T>): Promise<T> {
    this.#waiting++;
    const turn = this.#tail.then(() => {
      this.#waiting--;
      return call();
    });
    this.#tail = turn.catch(() => undefined);
    return turn;
  }

  /** Calls handed in and not yet started. */
  get waiting(): number {
    return this.#waiting;
  }
}

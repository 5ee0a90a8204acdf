/**
 * Runs tasks one at a time per key, in the order they were given; tasks of different keys run
 * at once. A task's failure is its caller's and does not hold up the next one. A key with
 * nothing waiting is forgotten.
 */
export class KeyedChain {
  readonly #tails = new Map<string, Promise<void>>();

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const run = (this.#tails.get(key) ?? Promise.resolve()).then(task);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.#tails.set(key, tail);
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return run;
  }

  /** Keys with a task running or waiting (tests). */
  get size(): number {
    return this.#tails.size;
  }
}

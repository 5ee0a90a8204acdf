/**
 * A few seconds of memory for expensive reads that many clients ask at once (every dashboard
 * of an enterprise polls the same metrics): one computation per key at a time, shared by the
 * requests that arrive while it runs. Past its TTL an answer is still served (for up to
 * `staleFactor` TTLs) while one refresh runs in the background, so callers never queue behind
 * the refresh. Failures are not kept.
 */
interface Entry<T> {
  at: number;
  value: Promise<T>;
  settled: boolean;
  refreshing: boolean;
}

export class ShortCache<T> {
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  readonly #staleFactor: number;
  readonly #entries = new Map<string, Entry<T>>();

  constructor(ttlMs: number, maxEntries = 1000, staleFactor = 5) {
    this.#ttlMs = ttlMs;
    this.#maxEntries = maxEntries;
    this.#staleFactor = staleFactor;
  }

  get(key: string, now: number, compute: () => Promise<T>): Promise<T> {
    if (this.#ttlMs <= 0) return compute();
    const hit = this.#entries.get(key);
    if (hit !== undefined) {
      const age = now - hit.at;
      if (age < this.#ttlMs) return hit.value;
      if (hit.settled && age < this.#ttlMs * this.#staleFactor) {
        if (!hit.refreshing) {
          hit.refreshing = true;
          this.#start(key, now, compute, hit);
        }
        return hit.value;
      }
    }
    return this.#start(key, now, compute, undefined).value;
  }

  #start(key: string, now: number, compute: () => Promise<T>, stale: Entry<T> | undefined): Entry<T> {
    const entry: Entry<T> = { at: now, value: compute(), settled: false, refreshing: false };
    entry.value.then(
      () => {
        entry.settled = true;
        if (this.#entries.size >= this.#maxEntries && !this.#entries.has(key)) this.#entries.delete(this.#entries.keys().next().value!);
        this.#entries.set(key, entry);
      },
      () => {
        if (stale !== undefined) stale.refreshing = false;
        else if (this.#entries.get(key) === entry) this.#entries.delete(key);
      },
    );
    // A first computation is shared at once; a refresh replaces the stale answer when it lands.
    if (stale === undefined) {
      if (this.#entries.size >= this.#maxEntries) this.#entries.delete(this.#entries.keys().next().value!);
      this.#entries.set(key, entry);
    }
    return entry;
  }
}

/**
 * The last `capacity` ids seen, for dropping repeats: the pipeline publishes a batch's alerts
 * before storing its rows, so a batch redelivered after a crash publishes some alerts again.
 * Oldest out first; memory is bounded by the capacity.
 */
export class RecentIds {
  readonly #seen = new Set<string>();
  readonly #order: string[];
  #next = 0;

  constructor(readonly capacity: number) {
    this.#order = new Array<string>(capacity);
  }

  /** True the first time `id` is seen (within the last `capacity` ids), false for a repeat. */
  add(id: string): boolean {
    if (this.#seen.has(id)) return false;
    const evicted = this.#order[this.#next];
    if (evicted !== undefined) this.#seen.delete(evicted);
    this.#order[this.#next] = id;
    this.#next = (this.#next + 1) % this.capacity;
    this.#seen.add(id);
    return true;
  }

  has(id: string): boolean {
    return this.#seen.has(id);
  }

  get size(): number {
    return this.#seen.size;
  }
}

/** How the api remembers an alert it has seen: ids are unique within an enterprise. */
export function seenAlertKey(enterprise: string, alertId: string): string {
  return `${enterprise}|${alertId}`;
}

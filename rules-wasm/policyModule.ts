/**
 * A compiled policy set, instantiated: the decision tables copied into the module's memory
 * once, and a reusable columnar batch that callers fill in place (typed-array views straight
 * over WASM memory, no copies) before one `evaluate` call runs the whole batch.
 */
import { BYTES_PER_EVENT, CAPACITY_ALIGN, COLUMN_OFFSET, UNKNOWN_VERSION } from './columns.js';
import type { CompiledPolicySet } from './compiler.js';
import type { EvalEvent } from './event.js';
import { LocalClock } from './localClock.js';
import { parseOsVersion, verdictOfRank, type Verdict } from './model.js';

interface CoreExports {
  memory: WebAssembly.Memory;
  heapBase(): number;
  evaluate(n: number, cols: number, cap: number, base: number, aux: number, list: number, ranks: number): void;
}

const PAGE = 65_536;
export const DEFAULT_BATCH_CAPACITY = 4096;

/** Typed-array views of one batch's columns. Valid until the batch grows. */
export interface BatchColumns {
  readonly capacity: number;
  /** Two u32 per event: role bits 0–31, then 32–63. */
  readonly roles: Uint32Array;
  readonly app: Uint32Array;
  readonly action: Uint32Array;
  readonly tower: Uint32Array;
  readonly region: Uint32Array;
  readonly os: Uint32Array;
  readonly osVersion: Uint32Array;
  readonly minuteOfWeek: Uint32Array;
  readonly bytesUp: Float64Array;
  readonly bytesDown: Float64Array;
  readonly out: Uint32Array;
}

export class PolicyModule {
  readonly hash: string;
  readonly encoder: EventEncoder;
  readonly #compiled: CompiledPolicySet;
  readonly #core: CoreExports;
  readonly #tables: { base: number; aux: number; list: number; ranks: number };
  readonly #columnsAt: number;
  #columns: BatchColumns;

  private constructor(compiled: CompiledPolicySet, core: CoreExports, capacity: number) {
    this.hash = compiled.hash;
    this.#compiled = compiled;
    this.#core = core;
    this.encoder = new EventEncoder(compiled);
    let at = align(core.heapBase(), 16);
    const place = (array: Uint32Array): number => {
      const ptr = at;
      at = align(at + array.byteLength, 16);
      return ptr;
    };
    const { base, aux, list, ranks } = compiled.tables;
    this.#tables = { base: place(base), aux: place(aux), list: place(list), ranks: place(ranks) };
    this.#columnsAt = at;
    this.#columns = this.#reserve(capacity);
    const memory = new Uint8Array(core.memory.buffer);
    for (const [array, ptr] of [
      [base, this.#tables.base],
      [aux, this.#tables.aux],
      [list, this.#tables.list],
      [ranks, this.#tables.ranks],
    ] as const) {
      memory.set(new Uint8Array(array.buffer, array.byteOffset, array.byteLength), ptr);
    }
  }

  static async instantiate(compiled: CompiledPolicySet, capacity = DEFAULT_BATCH_CAPACITY): Promise<PolicyModule> {
    const { instance } = await WebAssembly.instantiate(compiled.wasm, {
      env: {
        abort: (): never => {
          throw new Error('policy core aborted');
        },
      },
    });
    return new PolicyModule(compiled, instance.exports as unknown as CoreExports, capacity);
  }

  get compiled(): CompiledPolicySet {
    return this.#compiled;
  }

  /** The batch columns, grown to at least `capacity` events. Fill rows, then `run(n)`. */
  columns(capacity = 0): BatchColumns {
    if (capacity > this.#columns.capacity) this.#columns = this.#reserve(capacity);
    return this.#columns;
  }

  /** Evaluates rows [0, n) of the batch; ranks land in `columns().out`. */
  run(n: number): Uint32Array {
    const cols = this.#columns;
    if (n > cols.capacity) throw new RangeError(`batch of ${n} events exceeds capacity ${cols.capacity}`);
    const t = this.#tables;
    this.#core.evaluate(n, this.#columnsAt, cols.capacity, t.base, t.aux, t.list, t.ranks);
    return cols.out;
  }

  verdictOf(rank: number): Verdict {
    return verdictOfRank(this.#compiled.set, rank);
  }

  /** Convenience for tools and tests: encode, evaluate in batches, decode. */
  evaluateEvents(events: readonly EvalEvent[]): Verdict[] {
    const verdicts: Verdict[] = [];
    const cols = this.columns(Math.min(events.length, 65_536));
    for (let start = 0; start < events.length; start += cols.capacity) {
      const n = Math.min(cols.capacity, events.length - start);
      for (let i = 0; i < n; i++) this.encoder.encode(cols, i, events[start + i] as EvalEvent);
      const out = this.run(n);
      for (let i = 0; i < n; i++) verdicts.push(this.verdictOf(out[i] ?? 0));
    }
    return verdicts;
  }

  #reserve(requested: number): BatchColumns {
    const capacity = align(Math.max(requested, CAPACITY_ALIGN), CAPACITY_ALIGN);
    const end = this.#columnsAt + capacity * BYTES_PER_EVENT;
    const memory = this.#core.memory;
    if (end > memory.buffer.byteLength) memory.grow(Math.ceil((end - memory.buffer.byteLength) / PAGE));
    const buffer = memory.buffer;
    const u32 = (offset: number, per = 1): Uint32Array => new Uint32Array(buffer, this.#columnsAt + capacity * offset, capacity * per);
    const f64 = (offset: number): Float64Array => new Float64Array(buffer, this.#columnsAt + capacity * offset, capacity);
    return {
      capacity,
      roles: u32(COLUMN_OFFSET.roles, 2),
      app: u32(COLUMN_OFFSET.app),
      action: u32(COLUMN_OFFSET.action),
      tower: u32(COLUMN_OFFSET.tower),
      region: u32(COLUMN_OFFSET.region),
      os: u32(COLUMN_OFFSET.os),
      osVersion: u32(COLUMN_OFFSET.osVersion),
      minuteOfWeek: u32(COLUMN_OFFSET.minuteOfWeek),
      bytesUp: f64(COLUMN_OFFSET.bytesUp),
      bytesDown: f64(COLUMN_OFFSET.bytesDown),
      out: u32(COLUMN_OFFSET.out),
    };
  }
}

/**
 * Maps an event's strings to the module's class ids. Lookups are Map gets; callers that see
 * the same user or app repeatedly (the pipeline) can cache `roleMask` and `appClass` results.
 */
export class EventEncoder {
  readonly clock: LocalClock;
  readonly #roleBit: Map<string, number>;
  readonly #app: Map<string, number>;
  readonly #category: Map<string, number>;
  readonly #action: Map<string, number>;
  readonly #tower: Map<string, number>;
  readonly #region: Map<string, number>;
  readonly #os: Map<string, number>;
  readonly #categories: number;

  constructor(compiled: CompiledPolicySet) {
    const { layout } = compiled;
    const ids = (values: readonly string[], first = 1): Map<string, number> => new Map(values.map((v, i) => [v, i + first]));
    this.#roleBit = ids(layout.roles, 0);
    this.#app = ids(layout.apps);
    this.#category = ids(layout.categories);
    this.#action = ids(layout.actions);
    this.#tower = ids(layout.towers);
    this.#region = ids(layout.regions);
    this.#os = ids(layout.os);
    this.#categories = layout.categories.length + 1;
    this.clock = new LocalClock(compiled.set.timezone);
  }

  /** Writes the low and high words of the role mask for `roleIds` into roles[2i], roles[2i+1]. */
  writeRoleMask(roles: Uint32Array, i: number, roleIds: readonly string[]): void {
    let lo = 0;
    let hi = 0;
    for (const id of roleIds) {
      const bit = this.#roleBit.get(id);
      if (bit === undefined) continue;
      if (bit < 32) lo |= 1 << bit;
      else hi |= 1 << (bit - 32);
    }
    roles[2 * i] = lo >>> 0;
    roles[2 * i + 1] = hi >>> 0;
  }

  appClass(app: string | undefined, category: string | undefined): number {
    const lit = app === undefined ? 0 : (this.#app.get(app) ?? 0);
    const cat = category === undefined ? 0 : (this.#category.get(category) ?? 0);
    return lit * this.#categories + cat;
  }

  actionClass(action: string | undefined): number {
    return action === undefined ? 0 : (this.#action.get(action) ?? 0);
  }

  encode(cols: BatchColumns, i: number, ev: EvalEvent): void {
    this.writeRoleMask(cols.roles, i, ev.role_ids);
    cols.app[i] = this.appClass(ev.app, ev.app_category);
    cols.action[i] = this.actionClass(ev.action);
    cols.tower[i] = ev.tower_id === undefined ? 0 : (this.#tower.get(ev.tower_id) ?? 0);
    cols.region[i] = ev.region === undefined ? 0 : (this.#region.get(ev.region) ?? 0);
    cols.os[i] = ev.os === undefined ? 0 : (this.#os.get(ev.os.toLowerCase()) ?? 0);
    cols.osVersion[i] = (ev.os_version === undefined ? null : parseOsVersion(ev.os_version)) ?? UNKNOWN_VERSION;
    cols.minuteOfWeek[i] = this.clock.minuteOfWeek(ev.ts);
    cols.bytesUp[i] = ev.bytes_up ?? 0;
    cols.bytesDown[i] = ev.bytes_down ?? 0;
  }
}

function align(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

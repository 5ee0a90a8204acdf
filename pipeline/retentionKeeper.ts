/**
 * Keeps the history tables' TTL on each enterprise's plan (core/clickhouse/retention.ts): at
 * start, and whenever an enterprise or a plan changes in the control plane. Several pipeline
 * processes may run one each: the change is idempotent, and one already in place sends no DDL.
 * A failure (ClickHouse away) is logged and tried again; it never ends the process.
 */
import { applyRetention, type ClickHouseHandle, isRetentionDays, type RetentionSpec } from '../core/clickhouse/index.js';
import type { ControlPlaneView } from '../core/controlPlane/index.js';
import type { LogLine } from '../core/log.js';

/** How long changes are gathered before the TTL is rewritten (a seed writes many enterprises at once). */
export const RETENTION_SETTLE_MS = 2_000;
/** Wait before trying again after a failure. */
export const RETENTION_RETRY_MS = 30_000;

export interface RetentionKeeperOptions {
  view: ControlPlaneView;
  clickhouse: ClickHouseHandle;
  /** Days kept for rows of no enterprise, and for an enterprise without a usable plan (TOWERWATCH_RETENTION_DAYS). */
  defaultDays: number;
  log?: LogLine;
  /** @default RETENTION_SETTLE_MS */
  settleMs?: number;
  /** @default RETENTION_RETRY_MS */
  retryMs?: number;
}

export class RetentionKeeper {
  readonly #opts: RetentionKeeperOptions;
  readonly #unsubscribe: () => void;
  /** What the TTL says since this keeper last set or checked it (null: not yet). */
  #applied: ReadonlyMap<string, number> | null = null;
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<void> = Promise.resolve();
  #closed = false;
  /** Times the TTL was changed (tests, status). */
  changes = 0;

  private constructor(opts: RetentionKeeperOptions) {
    this.#opts = opts;
    this.#unsubscribe = opts.view.onChange((c) => {
      if (c.kinds.has('enterprise') || c.kinds.has('plan')) this.#schedule(opts.settleMs ?? RETENTION_SETTLE_MS);
    });
  }

  /** Starts the keeper and brings the TTL to the plans once before resolving (a failure is logged and retried). */
  static async start(opts: RetentionKeeperOptions): Promise<RetentionKeeper> {
    const keeper = new RetentionKeeper(opts);
    await keeper.sync();
    return keeper;
  }

  /** The retention the control plane asks for now. */
  spec(): RetentionSpec {
    const { view, defaultDays, log } = this.#opts;
    const enterprises = new Map<string, number>();
    for (const e of view.list('enterprise')) {
      const days = view.plan(e.plan_id)?.retention_days;
      if (isRetentionDays(days)) enterprises.set(e.id, days);
      else {
        enterprises.set(e.id, defaultDays);
        log?.(`retention: enterprise ${e.id}'s plan ${e.plan_id} has no usable retention_days (${String(days)}); keeping ${defaultDays} days`, 'warn');
      }
    }
    return { defaultDays, enterprises };
  }

  /** Brings the TTL to the plans now (after any sync in progress). */
  sync(): Promise<void> {
    this.#running = this.#running.then(() => this.#sync());
    return this.#running;
  }

  async #sync(): Promise<void> {
    if (this.#closed) return;
    const spec = this.spec();
    const before = this.#applied;
    // Rows stored already need their TTL recomputed only when an enterprise that had a
    // retention keeps less now; unknown (first run): recompute.
    const materialize = before === null || [...before].some(([id, days]) => (spec.enterprises.get(id) ?? Infinity) < days);
    try {
      const changed = await applyRetention(this.#opts.clickhouse, spec, { materialize });
      this.#applied = spec.enterprises;
      if (changed.length > 0) {
        this.changes++;
        const tiers = [...new Set([spec.defaultDays, ...spec.enterprises.values()])].sort((a, b) => a - b);
        this.#opts.log?.(
          `retention: ${changed.join(', ')} keep ${tiers.join(' / ')} days by plan (${spec.enterprises.size} enterprises; others ${spec.defaultDays})`,
        );
      }
    } catch (err) {
      this.#opts.log?.(
        `retention: could not set the TTL by plan, again in ${(this.#opts.retryMs ?? RETENTION_RETRY_MS) / 1000} s: ${err instanceof Error ? err.message : String(err)}`,
        'warn',
      );
      this.#schedule(this.#opts.retryMs ?? RETENTION_RETRY_MS);
    }
  }

  #schedule(ms: number): void {
    if (this.#closed || this.#timer !== null) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.sync();
    }, ms);
    this.#timer.unref();
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#unsubscribe();
    if (this.#timer !== null) clearTimeout(this.#timer);
    await this.#running;
  }
}

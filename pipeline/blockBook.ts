/**
 * The remediation worker's side of blocks (core/blocks.ts): merge an automatic block request
 * that an active block covers, record a block once its tower command succeeded, remove it once
 * an unblock did. Requests on one block are handled one at a time in this process, so a burst
 * of alerts for one device sends one command; across processes the compare-and-set on the
 * entry keeps the count right (two processes may each send a command in the same instant).
 * With the bucket unavailable nothing merges: every request is executed, as before blocks.
 */
import type { KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { type Block, BLOCKS_BUCKET, blockIdOf, blockKey, type BlockTarget, coveringTargets, decodeStoredBlock } from '../core/blocks.js';
import { KeyedChain } from '../core/keyedChain.js';
import type { LogLine } from '../core/log.js';
import { isWrongLastSequence, openKvBucket, reopening } from '../core/nats/index.js';
import type { RemediationRequest } from '../core/remediation.js';

const MAX_CAS_ATTEMPTS = 10;

export class BlockBook {
  /** The bucket, opened again after a failure: the watch keeps trying, so does each request. */
  readonly #kv: () => Promise<KV>;
  readonly #log: LogLine;
  /** One request at a time per device. */
  readonly #locks = new KeyedChain();
  /** Every block, as the watch last saw it (for the expiry sweep). */
  readonly #index = new Map<string, Block>();
  #watcher: { stop(): void } | null = null;
  #closed = false;

  constructor(nc: NatsConnection, options: { replicas?: number; log: LogLine }) {
    this.#log = options.log;
    this.#kv = reopening(() =>
      openKvBucket(nc, BLOCKS_BUCKET, {
        history: 1,
        replicas: options.replicas ?? 1,
        description: 'towerwatch: active blocks (device or app, per tower), written by the remediation worker',
        timeoutMs: 2_000,
        retryForMs: 0,
      }),
    );
    void this.#watch();
  }

  /** Runs `fn` with the block of `req` (the whole device's) held by this process. */
  async exclusive<T>(req: RemediationRequest, fn: () => Promise<T>): Promise<T> {
    // The whole device, whatever the scope: a carrier-wide block and a tower block of it must not race.
    return this.#locks.run(`${req.enterprise_id}|${req.device_id}`, fn);
  }

  /**
   * Merges `req` into the active block that covers it (the same or a wider scope; the device's,
   * or the app's), if any; a tower's carriers are `towerCarriers`.
   * @returns the block it was merged into, or null (no block, or the bucket unavailable)
   */
  async mergeInto(req: RemediationRequest, towerCarriers: readonly string[] = []): Promise<Block | null> {
    try {
      const kv = await this.#kv();
      for (const t of coveringTargets(targetOf(req), towerCarriers)) {
        const merged = await this.#update(kv, t, (b) => (b === null ? null : hit(b, req)));
        if (merged !== null) return merged;
      }
      return null;
    } catch (err) {
      this.#log(`remediator: could not read blocks (${errorText(err)}); executing ${req.action} for ${req.device_id} at ${req.tower_id}`, 'warn');
      return null;
    }
  }

  /**
   * After a command succeeded: a block made (lasting `ttlMs`, null: until lifted) or extended,
   * or (an unblock) removed. A failure is logged: the tower did act.
   */
  async record(req: RemediationRequest, now: number, ttlMs: number | null, towers?: readonly string[]): Promise<void> {
    try {
      const kv = await this.#kv();
      const t = targetOf(req);
      if (req.action === 'unblock_device' || req.action === 'unblock_app') {
        await kv.delete(blockKey(t));
        return;
      }
      await this.#update(kv, t, (b) => (b === null ? fresh(t, req, now, ttlMs, towers) : hit(b, req)));
    } catch (err) {
      this.#log(`remediator: could not record the block of ${req.device_id} at ${req.tower_id}: ${errorText(err)}`, 'warn');
    }
  }

  /** Every block (of every enterprise) whose time is up at `now`, as the watch has them. */
  expired(now: number): Block[] {
    return [...this.#index.values()].filter((b) => b.expires_at !== null && b.expires_at <= now);
  }

  /** Every block (of every enterprise), as the watch has them. */
  all(): Block[] {
    return [...this.#index.values()];
  }

  /**
   * Records traffic seen since `b`'s grace period ended: `events` in all, the last at `lastSeen`.
   * @returns the block, when this made it ineffective (it was not before); null otherwise
   */
  async noteTraffic(b: Block, events: number, lastSeen: number, now: number): Promise<Block | null> {
    const kv = await this.#kv();
    let becameIneffective = false;
    // The same block only (a block lifted and made again meanwhile starts over).
    const next = await this.#update(kv, b, (current) => {
      if (current === null || current.created_at !== b.created_at || (current.events_since ?? 0) >= events) return null;
      becameIneffective = (current.events_since ?? 0) === 0;
      return { ...current, events_since: events, last_seen_at: lastSeen, ineffective_since: current.ineffective_since ?? now };
    });
    return becameIneffective ? next : null;
  }

  /** Stops the watch. */
  close(): void {
    this.#closed = true;
    this.#watcher?.stop();
  }

  /**
   * Follows the bucket into #index; a watch that fails or ends (or a bucket that cannot be
   * opened) is tried again after a pause.
   */
  async #watch(): Promise<void> {
    while (!this.#closed) {
      try {
        const kv = await this.#kv();
        const watcher = await kv.watch({ key: '>' });
        this.#watcher = watcher;
        if (this.#closed) watcher.stop();
        for await (const e of watcher) {
          const b = e.operation === 'PUT' ? decodeStoredBlock(e.value) : null;
          // An entry that is not a block is skipped, not a reason to stop watching the others.
          if (e.operation === 'PUT' && b === null) this.#log(`remediator: blocks entry ${e.key} (revision ${e.revision}) is not a block; ignored`, 'warn');
          if (b !== null) this.#index.set(e.key, b);
          else this.#index.delete(e.key);
        }
      } catch (err) {
        if (!this.#closed) this.#log(`remediator: watching blocks failed (${errorText(err)}); again in 1 s`, 'warn');
      }
      if (!this.#closed) await new Promise((r) => setTimeout(r, 1000));
    }
  }

  /** Compare-and-set of the entry of `t` through `change` (null: leave it). */
  async #update(kv: KV, t: BlockTarget, change: (b: Block | null) => Block | null): Promise<Block | null> {
    const key = blockKey(t);
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const entry = await kv.get(key);
      // An entry that is not a block counts as none: the next block made there replaces it.
      const current = entry?.operation === 'PUT' ? decodeStoredBlock(entry.value) : null;
      const next = change(current);
      if (next === null) return null;
      try {
        if (entry === null) await kv.create(key, JSON.stringify(next));
        else await kv.update(key, JSON.stringify(next), entry.revision);
        return next;
      } catch (err) {
        if (isWrongLastSequence(err)) continue;
        throw err;
      }
    }
    throw new Error(`${MAX_CAS_ATTEMPTS} conflicting writes in a row on block ${blockIdOf(t)}`);
  }
}

function targetOf(req: RemediationRequest): BlockTarget {
  const app = req.action === 'block_app' || req.action === 'unblock_app' ? req.app_id : null;
  const scope = req.scope ?? 'tower';
  return {
    enterprise_id: req.enterprise_id,
    device_id: req.device_id,
    app_id: app,
    scope,
    tower_id: scope === 'tower' ? req.tower_id : '',
    carrier: req.carrier,
  };
}

function fresh(t: BlockTarget, req: RemediationRequest, now: number, ttlMs: number | null, towers?: readonly string[]): Block {
  const scope = t.scope ?? 'tower';
  return {
    block_id: blockIdOf(t),
    enterprise_id: t.enterprise_id,
    device_id: t.device_id,
    app_id: t.app_id,
    scope,
    tower_id: t.tower_id,
    carrier: req.carrier,
    ...(scope === 'tower' ? {} : { towers: [...(towers ?? [])] }),
    created_by: req.trigger === 'auto' ? 'auto' : (req.requested_by ?? 'manual'),
    created_at: now,
    expires_at: ttlMs === null ? null : now + ttlMs,
    hits: 1,
    first_alert_id: req.alert_id,
    last_alert_id: req.alert_id,
    last_hit_at: now,
    rule_id: req.rule_id,
  };
}

function hit(b: Block, req: RemediationRequest): Block {
  return { ...b, hits: b.hits + 1, last_alert_id: req.alert_id, last_hit_at: Date.now() };
}

const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

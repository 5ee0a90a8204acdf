/**
 * The remediation worker: takes requests off the REMEDIATION work queue (the pipeline's
 * automatic ones and the api's manual ones), checks the enterprise's plan again for automatic
 * ones, sends the command to the tower over NATS request/reply with retries and backoff, records
 * the outcome in ClickHouse `remedial_actions`, tells dashboards on `events.<enterprise>`, and
 * acks. An alert's action runs once: the action id is derived from alert and action, and an
 * outcome already recorded for it is not executed again (a redelivery, or a repeat after the
 * stream's duplicate window). Blocks are state (pipeline/blockBook.ts): an automatic block
 * request that an active block covers is merged into it (`merged`, no command).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstream, type Consumer, type JsMsg } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { Packr, Unpackr } from 'msgpackr';
import { type ClickHouseHandle, REMEDIAL_ACTIONS as REMEDIAL_ACTIONS_TABLE, tableOf } from '../core/clickhouse/index.js';
import { ensureConsumer, NatsConnectionWatch, REMEDIATION_STREAM, remediationSubject, towerCommandSubject } from '../core/nats/index.js';
import type { ControlPlaneView } from '../core/controlPlane/index.js';
import { encodeEnterpriseEvent, enterpriseEventsSubject } from '../core/live.js';
import { ACTION_NAMES, REMEDIAL_ACTIONS, remedialActionId, type RemediationRequest, type RemediationStatus, type TowerAck } from '../core/remediation.js';
import { integerOption, numberOption } from '../core/options.js';
import { blockTowers, PROOF_GRACE_MS, unblockRequestOf, WIDE_SCOPE_SUBJECT } from '../core/blocks.js';
import { trafficSince } from './blockProof.js';
import { BlockBook } from './blockBook.js';
import type { RowSink } from './clickhouseSink.js';
import { ConsumerLoop } from './consumerLoop.js';
import { MessageQueue, nakQuietly, stallCheckOf } from './messageQueue.js';
import type { LogLine } from '../core/log.js';

export const REMEDIATOR_CONSUMER = 'remediator';
/** How long to wait for a tower's answer. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 2000;
/** Attempts per command. */
export const DEFAULT_COMMAND_ATTEMPTS = 3;
/** First backoff between a command's attempts; doubles per attempt. */
export const DEFAULT_COMMAND_BACKOFF_MS = 250;
/** Requests executed at once. */
export const DEFAULT_REMEDIATION_CONCURRENCY = 16;
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });
const packr = new Packr({ useRecords: false });

export interface RemediatorOptions {
  nc: NatsConnection;
  /** Where outcomes go (the service's one ClickHouseSink). */
  sink: RowSink;
  /** For reading the outcomes already recorded. */
  clickhouse: ClickHouseHandle;
  view: ControlPlaneView;
  log: LogLine;
  /** How long to wait for a tower's answer. @default DEFAULT_COMMAND_TIMEOUT_MS */
  commandTimeoutMs?: number;
  /** Attempts per command. @default DEFAULT_COMMAND_ATTEMPTS */
  maxAttempts?: number;
  /** First backoff; doubles per attempt. @default DEFAULT_COMMAND_BACKOFF_MS */
  backoffMs?: number;
  /** Requests executed at once (a silent tower must not hold up the others). @default DEFAULT_REMEDIATION_CONCURRENCY */
  concurrency?: number;
  /** Least replicas of the blocks bucket. @default 1 */
  replicas?: number;
  /** How often expired blocks are looked for (each is lifted by an automatic unblock), and blocks checked for proof. @default 30000 */
  sweepEveryMs?: number;
  /** How long a block's traffic may still arrive before it counts against the block. @default PROOF_GRACE_MS */
  proofGraceMs?: number;
}

/** The options {@link resolveRemediatorOptions} fills in and checks. */
export type RemediatorTuning = Pick<RemediatorOptions, 'commandTimeoutMs' | 'maxAttempts' | 'backoffMs' | 'concurrency'>;

/**
 * The tuning options with their defaults (an option given as `undefined` keeps its default).
 * @throws {RangeError} or {TypeError} naming an option that is out of range or of the wrong kind
 */
export function resolveRemediatorOptions(o: RemediatorTuning): Required<RemediatorTuning> {
  return {
    commandTimeoutMs: numberOption('commandTimeoutMs', o.commandTimeoutMs, DEFAULT_COMMAND_TIMEOUT_MS, 0, true),
    maxAttempts: integerOption('maxAttempts', o.maxAttempts, DEFAULT_COMMAND_ATTEMPTS),
    backoffMs: numberOption('backoffMs', o.backoffMs, DEFAULT_COMMAND_BACKOFF_MS),
    concurrency: integerOption('concurrency', o.concurrency, DEFAULT_REMEDIATION_CONCURRENCY),
  };
}

export interface RemediationOutcome {
  action_id: string;
  status: RemediationStatus;
  attempts: number;
  reason: string;
}

/** Towers commanded at once for a block wider than a tower. */
export const TOWERS_AT_ONCE = 16;

export class Remediator extends ConsumerLoop {
  readonly counters = { executed: 0, skipped: 0, merged: 0, duplicates: 0, rejected: 0, consumeRestarts: 0, ineffective: 0 };
  readonly #o: RemediatorOptions & Required<RemediatorTuning>;
  #queue: MessageQueue | null = null;
  readonly #inFlight = new Set<Promise<void>>();
  /** Our own link to NATS: a tower cannot answer while it is down, which is not the tower's failure. */
  readonly #link: NatsConnectionWatch;
  readonly #blocks: BlockBook;
  #sweeper: NodeJS.Timeout | undefined;
  #sweeping = false;

  private constructor(options: RemediatorOptions) {
    super();
    // Resolved after the spread: an option passed as `undefined` must not erase its default.
    this.#o = { ...options, ...resolveRemediatorOptions(options) };
    this.#link = new NatsConnectionWatch(options.nc);
    this.#blocks = new BlockBook(options.nc, { replicas: options.replicas ?? 1, log: options.log });
  }

  static async start(options: RemediatorOptions): Promise<Remediator> {
    const r = new Remediator(options);
    r.#sweeper = setInterval(() => void r.#sweep(), options.sweepEveryMs ?? 30_000);
    r.#sweeper.unref();
    // ack_wait longer than a command's worst case (attempts × timeout + backoff); working() extends it.
    await ensureConsumer(options.nc, REMEDIATION_STREAM, REMEDIATOR_CONSUMER, { ackWaitMs: 30_000, maxAckPending: 256 });
    const consumer = await jetstream(options.nc).consumers.get(REMEDIATION_STREAM, REMEDIATOR_CONSUMER);
    r.follow(r.#run(consumer));
    return r;
  }

  /**
   * Supervised by the queue: a consume that fails or ends (a broker restart) is opened again
   * after a pause, and a pull the server lost is made again (see MessageQueue).
   */
  async #run(consumer: Consumer): Promise<void> {
    const concurrency = this.#o.concurrency;
    const queue = new MessageQueue(
      () => consumer.consume({ max_messages: concurrency }),
      concurrency,
      (err) => {
        this.counters.consumeRestarts++;
        this.#o.log(`remediator: consuming failed, retrying: ${err.message}`, 'warn');
      },
      stallCheckOf(consumer, (line) => this.#o.log(`remediator: ${line}`, 'warn')),
    );
    this.#queue = queue;
    try {
      while (!this.stopping) {
        while (this.#inFlight.size >= concurrency && !this.stopping) await Promise.race(this.#inFlight);
        for (const m of await queue.take(concurrency - this.#inFlight.size, 0, () => this.stopping)) {
          const p = this.#handle(m)
            .catch((err: unknown) => {
              // ClickHouse or NATS failed: leave it for redelivery.
              this.#o.log(`remediator: ${err instanceof Error ? err.message : String(err)}; will retry`, 'warn');
              nakQuietly(m, 5000);
            })
            .finally(() => this.#inFlight.delete(p));
          this.#inFlight.add(p);
        }
      }
    } finally {
      // Read and never handled: back at once, for another process or the next start.
      for (const m of await queue.close()) nakQuietly(m);
    }
  }

  async #handle(m: JsMsg): Promise<void> {
    let req: RemediationRequest;
    try {
      req = unpackr.unpack(m.data) as RemediationRequest;
      if (
        typeof req.alert_id !== 'string' ||
        !(REMEDIAL_ACTIONS as readonly string[]).includes(req.action) ||
        typeof req.tower_id !== 'string' ||
        typeof req.enterprise_id !== 'string'
      )
        throw new Error('not a remediation request');
    } catch (err) {
      this.counters.rejected++;
      this.#o.log(`remediator: dropping message ${m.seq} on ${m.subject}: ${err instanceof Error ? err.message : String(err)}`);
      m.term();
      return;
    }
    const actionId = remedialActionId(req.alert_id, req.action);
    if (await this.#recorded(actionId)) {
      this.counters.duplicates++;
      m.ack();
      return;
    }
    const outcome = await this.#blocks.exclusive(req, async (): Promise<RemediationOutcome> => {
      if (req.trigger === 'auto' && (req.action === 'block_device' || req.action === 'block_app') && this.#autoRemediates(req.enterprise_id)) {
        const merged = await this.#blocks.mergeInto(req, this.#o.view.tower(req.tower_id)?.carrier_ids ?? []);
        if (merged !== null) {
          this.counters.merged++;
          return { action_id: actionId, status: 'merged', attempts: 0, reason: `merged into block ${merged.block_id} (${merged.hits} requests)` };
        }
      }
      const { outcome: o, reached } = await this.#executeAll(req, actionId, () => m.working());
      // A wider block that some towers acked is recorded with those: an unblock must reach them.
      if (o.status === 'success' || ((req.scope ?? 'tower') !== 'tower' && reached.length > 0)) {
        await this.#blocks.record(req, Date.now(), this.#blockTtlMs(req), reached);
      }
      return o;
    });
    const executedAt = Date.now();
    const row = REMEDIAL_ACTIONS_TABLE.encodeRows([
      {
        action_id: actionId,
        alert_id: req.alert_id,
        enterprise_id: req.enterprise_id,
        device_id: req.device_id ?? '',
        tower_id: req.tower_id,
        carrier: req.carrier ?? '',
        app_id: req.app_id ?? '',
        action: req.action,
        trigger: req.trigger ?? '',
        status: outcome.status,
        attempts: outcome.attempts,
        reason: outcome.reason,
        requested_by: req.requested_by ?? '',
        requested_at: req.requested_at ?? executedAt,
        executed_at: executedAt,
        stream_seq: m.seq,
      },
    ]);
    // A retried insert of this outcome (same message) is dropped by ClickHouse.
    await this.#o.sink.insert('remedial_actions', row, { token: `${actionId}:${m.seq}`, rows: 1 });
    this.#o.nc.publish(
      enterpriseEventsSubject(req.enterprise_id),
      encodeEnterpriseEvent({
        type: 'remediation',
        action_id: actionId,
        alert_id: req.alert_id,
        action_name: ACTION_NAMES[req.action],
        status: outcome.status,
        trigger: req.trigger,
        device_id: req.device_id,
        tower_id: req.tower_id,
        attempts: outcome.attempts,
        reason: outcome.reason || null,
        executed_at: new Date(executedAt).toISOString(),
      }),
    );
    if (outcome.status === 'skipped_by_plan') this.counters.skipped++;
    else if (outcome.status !== 'merged') this.counters.executed++;
    m.ack();
  }

  async #recorded(actionId: string): Promise<boolean> {
    const rs = await this.#o.clickhouse.client.query({
      query: `SELECT count() AS n FROM ${tableOf(this.#o.clickhouse, 'remedial_actions')} WHERE action_id = {id:String} AND status IN ('success', 'skipped_by_plan', 'merged')`,
      query_params: { id: actionId },
      format: 'JSONEachRow',
    });
    return Number((await rs.json<{ n: string }>())[0]?.n ?? 0) > 0;
  }

  /** An automatic block lasts the plan's `block_ttl_seconds`; one asked for by hand, until lifted. */
  #blockTtlMs(req: RemediationRequest): number | null {
    const ttl = req.trigger === 'auto' ? this.#o.view.planOfEnterprise(req.enterprise_id)?.block_ttl_seconds : undefined;
    return ttl === undefined ? null : ttl * 1000;
  }

  async #sweep(): Promise<void> {
    if (this.#sweeping || this.stopping) return;
    this.#sweeping = true;
    try {
      await this.#liftExpired();
      await this.#checkProof();
    } finally {
      this.#sweeping = false;
    }
  }

  /**
   * Marks `ineffective` each block whose traffic is still stored after its grace period (the
   * tower acked but does not honour it), and announces it once. A failure waits for the next sweep.
   */
  async #checkProof(): Promise<void> {
    const graceMs = this.#o.proofGraceMs ?? PROOF_GRACE_MS;
    const now = Date.now();
    const due = this.#blocks.all().filter((b) => b.created_at + graceMs <= now);
    if (due.length === 0) return;
    try {
      const traffic = await trafficSince(this.#o.clickhouse, due, graceMs);
      for (const b of due) {
        const t = traffic.get(b.block_id);
        if (t === undefined) continue;
        const marked = await this.#blocks.noteTraffic(b, t.events, t.last, now);
        if (marked === null) continue;
        this.counters.ineffective++;
        this.#o.log(
          `remediator: block ${b.block_id} (${b.device_id}${b.app_id === null ? '' : ` ${b.app_id}`} at ${b.scope === 'tower' ? b.tower_id : `${blockTowers(b).length} towers`}) is ineffective: ${t.events} events since its grace period ended`,
          'warn',
        );
        this.#o.nc.publish(
          enterpriseEventsSubject(b.enterprise_id),
          encodeEnterpriseEvent({
            type: 'block.ineffective',
            block_id: b.block_id,
            device_id: b.device_id,
            app_id: b.app_id,
            tower_id: b.tower_id,
            events_since: t.events,
            last_seen_at: new Date(t.last).toISOString(),
          }),
        );
      }
    } catch (err) {
      this.#o.log(`remediator: could not check blocks for proof (next sweep tries again): ${err instanceof Error ? err.message : String(err)}`, 'warn');
    }
  }

  /**
   * Asks for the unblock of each block whose time is up, as an automatic request on the queue
   * (one per block: its message id; every remediator may ask). A failure waits for the next sweep.
   */
  async #liftExpired(): Promise<void> {
    try {
      const js = jetstream(this.#o.nc);
      for (const b of this.#blocks.expired(Date.now())) {
        const { request, msgId } = unblockRequestOf(b, { now: Date.now() });
        await js.publish(remediationSubject(b.enterprise_id, b.tower_id || WIDE_SCOPE_SUBJECT), packr.pack(request), { msgID: msgId });
      }
    } catch (err) {
      this.#o.log(`remediator: could not lift expired blocks (next sweep tries again): ${err instanceof Error ? err.message : String(err)}`, 'warn');
    }
  }

  #autoRemediates(enterpriseId: string): boolean {
    return this.#o.view.planOfEnterprise(enterpriseId)?.auto_remediation === true;
  }

  /** The towers a request commands: its tower, or every tower of its wider scope. */
  towersOf(req: RemediationRequest): string[] {
    const scope = req.scope ?? 'tower';
    if (scope === 'tower') return [req.tower_id];
    if (req.towers !== undefined) return req.towers;
    const carriers = scope === 'carrier' ? [req.carrier] : (this.#o.view.enterprise(req.enterprise_id)?.carrier_ids ?? []);
    return this.#o.view
      .list('tower')
      .filter((t) => t.carrier_ids.some((c) => carriers.includes(c)))
      .map((t) => t.id)
      .sort();
  }

  /**
   * Runs a request at every tower of its scope, at most {@link TOWERS_AT_ONCE} at a time: success
   * when every tower acked; otherwise the first failure, with how many acked.
   */
  async #executeAll(req: RemediationRequest, actionId: string, working: () => void): Promise<{ outcome: RemediationOutcome; reached: string[] }> {
    if ((req.scope ?? 'tower') === 'tower') {
      const outcome = await this.execute(req, actionId, working);
      return { outcome, reached: outcome.status === 'success' ? [req.tower_id] : [] };
    }
    const towers = this.towersOf(req);
    if (towers.length === 0) {
      return { outcome: { action_id: actionId, status: 'failed', attempts: 0, reason: `no tower in the ${req.scope} scope` }, reached: [] };
    }
    const outcomes: Array<[string, RemediationOutcome]> = [];
    for (let i = 0; i < towers.length; i += TOWERS_AT_ONCE) {
      const chunk = towers.slice(i, i + TOWERS_AT_ONCE);
      outcomes.push(
        ...(await Promise.all(chunk.map(async (t) => [t, await this.execute({ ...req, tower_id: t }, actionId, working)] as [string, RemediationOutcome]))),
      );
    }
    if (outcomes.some(([, o]) => o.status === 'skipped_by_plan')) return { outcome: outcomes[0]![1], reached: [] };
    const reached = outcomes.filter(([, o]) => o.status === 'success').map(([t]) => t);
    const attempts = Math.max(...outcomes.map(([, o]) => o.attempts));
    const failed = outcomes.find(([, o]) => o.status !== 'success');
    if (failed === undefined) {
      return { outcome: { action_id: actionId, status: 'success', attempts, reason: `at ${reached.length} towers` }, reached };
    }
    const [tower, o] = failed;
    return {
      outcome: { action_id: actionId, status: o.status, attempts, reason: `acked at ${reached.length} of ${towers.length} towers; ${tower}: ${o.reason}` },
      reached,
    };
  }

  /** Runs one request against its tower (plan checked again for automatic ones). */
  async execute(req: RemediationRequest, actionId: string, working: () => void = () => undefined): Promise<RemediationOutcome> {
    // An automatic unblock (a block's time is up) is not an act of the plan's remediation.
    if (req.trigger === 'auto' && (req.action === 'block_device' || req.action === 'block_app') && !this.#autoRemediates(req.enterprise_id)) {
      return { action_id: actionId, status: 'skipped_by_plan', attempts: 0, reason: "the enterprise's plan does not include auto-remediation" };
    }
    const command = JSON.stringify({
      command_id: actionId,
      command: req.action,
      device_id: req.device_id,
      enterprise_id: req.enterprise_id,
      alert_id: req.alert_id,
      ...(req.action === 'block_app' || req.action === 'unblock_app' ? { app_id: req.app_id } : {}),
    });
    let last: RemediationOutcome = { action_id: actionId, status: 'timeout', attempts: 0, reason: '' };
    for (let attempt = 1; attempt <= this.#o.maxAttempts; attempt++) {
      working();
      const disconnects = this.#link.disconnects;
      try {
        const reply = await this.#o.nc.request(towerCommandSubject(req.tower_id), command, { timeout: this.#o.commandTimeoutMs });
        const answer = reply.json<Partial<TowerAck>>();
        if (answer.status === 'ok') return { action_id: actionId, status: 'success', attempts: attempt, reason: '' };
        last = { action_id: actionId, status: 'failed', attempts: attempt, reason: answer.reason ?? `tower answered ${String(answer.status)}` };
        if (answer.status === 'rejected') return last; // will never apply: no retry
      } catch (err) {
        // Our broker connection dropped meanwhile: no outcome to record; redelivered later.
        if (!this.#link.isConnected() || this.#link.disconnects !== disconnects)
          throw new Error(`NATS connection lost while commanding ${req.tower_id}`, { cause: err });
        const msg = err instanceof Error ? err.message : String(err);
        const timedOut = /timeout|no responders|503/i.test(msg);
        last = {
          action_id: actionId,
          status: timedOut ? 'timeout' : 'failed',
          attempts: attempt,
          reason: timedOut ? `no answer from ${req.tower_id} within ${this.#o.commandTimeoutMs} ms` : msg,
        };
      }
      if (attempt < this.#o.maxAttempts) await sleep(this.#o.backoffMs * 2 ** (attempt - 1));
    }
    return last;
  }

  /** Ends the consume the loop is reading. */
  protected override async interrupt(): Promise<void> {
    clearInterval(this.#sweeper);
    this.#blocks.close();
    this.#link.close();
    for (const m of (await this.#queue?.close()) ?? []) nakQuietly(m);
  }

  /** After the loop: the requests in flight. */
  protected override async release(): Promise<void> {
    await Promise.all(this.#inFlight);
  }
}

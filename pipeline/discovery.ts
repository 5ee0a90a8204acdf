/**
 * The discovery worker: reads the towers' sightings off DISCOVERY, stores every one in
 * ClickHouse `discovery_sightings`, and keeps the control plane's device registry to one entry per
 * device, written only when something changes: a new device of a known enterprise becomes
 * `discovered` (and the enterprise's dashboards hear of it on `events.<enterprise>`), a new
 * model or OS version is written; a plain re-sighting is a ClickHouse row and nothing else.
 * A message that cannot be decoded, or a report in it, goes to DISCOVERY_DLQ and `dead_letters`
 * with the reason. A redelivered message whose rows are stored is acked without a second copy.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { createHash } from 'node:crypto';
import { jetstream, type Consumer, type JetStreamClient, type JsMsg } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { ConflictError, type ControlPlaneStore, type ControlPlaneView } from '../core/controlPlane/index.js';
import { discoveredDeviceView } from '../core/discoveredDevice.js';
import { encodeEnterpriseEvent, enterpriseEventsSubject } from '../core/live.js';
import type { Device, DiscoveryReport } from '../core/domain.js';
import { addReason, checkSubject, deadLetterRow, emptySummary, summaryOf } from '../core/deadLetters.js';
import { DEAD_LETTERS, DISCOVERY_SIGHTINGS, type DeadLetterRow, type DiscoverySightingRow } from '../core/clickhouse/index.js';
import { integerOption, nameOption, numberOption } from '../core/options.js';
import { deadLetterHeaders, DISCOVERY_STREAM, ensureConsumer } from '../core/nats/index.js';
import { decodeDiscovery, type EventRejection } from '../core/wire.js';
import type { RowSink } from './clickhouseSink.js';
import { ConsumerLoop } from './consumerLoop.js';
import { MessageQueue, nakQuietly, stallCheckOf } from './messageQueue.js';
import type { LogLine } from '../core/log.js';

export const DISCOVERY_CONSUMER = 'discovery';
/** Messages per batch. */
export const DEFAULT_DISCOVERY_BATCH_SIZE = 500;
/** Longest wait for a batch to fill once a message came. */
export const DEFAULT_DISCOVERY_LINGER_MS = 200;
/** What became of a sighting (the `outcome` column). */
export const SIGHTING_OUTCOMES = {
  /** A device the registry did not know, of a known enterprise: now `discovered`. */
  discovered: 'discovered',
  /** A known device whose model or OS changed: registry entry rewritten. */
  updated: 'updated',
  /** A known device, nothing new: the sighting row is all. */
  sighted: 'sighted',
  /** Unknown device with no enterprise, an unknown one, or one the reporting carrier does not serve. */
  unclaimed: 'unclaimed',
} as const;
export type SightingOutcome = (typeof SIGHTING_OUTCOMES)[keyof typeof SIGHTING_OUTCOMES];

export interface DiscoveryWorkerOptions {
  nc: NatsConnection;
  /** Where sightings and dead letters go (the service's one ClickHouseSink). */
  sink: RowSink;
  view: ControlPlaneView;
  store: ControlPlaneStore;
  log: LogLine;
  /** Messages per batch. @default DEFAULT_DISCOVERY_BATCH_SIZE */
  batchSize?: number;
  /** Longest wait for a batch to fill once a message came: bounds how late a new device shows. @default DEFAULT_DISCOVERY_LINGER_MS */
  lingerMs?: number;
  /** Durable consumer name. @default DISCOVERY_CONSUMER */
  consumer?: string;
}

/** The options {@link resolveDiscoveryOptions} fills in and checks. */
export type DiscoveryTuning = Pick<DiscoveryWorkerOptions, 'batchSize' | 'lingerMs' | 'consumer'>;

/**
 * The tuning options with their defaults (an option given as `undefined` keeps its default).
 * @throws {RangeError} or {TypeError} naming an option that is out of range or of the wrong kind
 */
export function resolveDiscoveryOptions(o: DiscoveryTuning): Required<DiscoveryTuning> {
  return {
    batchSize: integerOption('batchSize', o.batchSize, DEFAULT_DISCOVERY_BATCH_SIZE),
    lingerMs: numberOption('lingerMs', o.lingerMs, DEFAULT_DISCOVERY_LINGER_MS),
    consumer: nameOption('consumer', o.consumer, DISCOVERY_CONSUMER),
  };
}

export interface DiscoveryCounters {
  messages: number;
  sightings: number;
  discovered: number;
  updated: number;
  unclaimed: number;
  /** Registry writes lost to a concurrent writer (the next sighting tries again). */
  conflicts: number;
  deadLetters: number;
  redeliveredSkipped: number;
}

interface Decoded {
  m: JsMsg;
  reports: DiscoveryReport[];
  rejected: EventRejection[];
  /** Set when the whole message was rejected. */
  failure: { code: string; message: string } | null;
}

interface Pending {
  device: Device;
  /** Revision to update from; null to create. */
  revision: number | null;
}

const iso = (ms: number): string => new Date(ms).toISOString();
const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));

export class DiscoveryWorker extends ConsumerLoop {
  readonly counters: DiscoveryCounters = {
    messages: 0,
    sightings: 0,
    discovered: 0,
    updated: 0,
    unclaimed: 0,
    conflicts: 0,
    deadLetters: 0,
    redeliveredSkipped: 0,
  };
  readonly #o: DiscoveryWorkerOptions & Required<DiscoveryTuning>;
  readonly #js: JetStreamClient;
  /**
   * Registry entries this worker wrote that the view may not show yet (the KV watch lags a
   * write by a moment): without them a device sighted twice in a row would be created twice.
   */
  readonly #written = new Map<string, { device: Device; revision: number }>();

  private constructor(options: DiscoveryWorkerOptions) {
    super();
    // Resolved after the spread: an option passed as `undefined` must not erase its default.
    this.#o = { ...options, ...resolveDiscoveryOptions(options) };
    this.#js = jetstream(options.nc);
  }

  static async start(options: DiscoveryWorkerOptions): Promise<DiscoveryWorker> {
    const w = new DiscoveryWorker(options);
    await ensureConsumer(options.nc, DISCOVERY_STREAM, w.#o.consumer, { ackWaitMs: 30_000, maxAckPending: Math.max(1000, w.#o.batchSize * 2) });
    const consumer = await w.#js.consumers.get(DISCOVERY_STREAM, w.#o.consumer);
    w.follow(w.#run(consumer));
    return w;
  }

  async #run(consumer: Consumer): Promise<void> {
    // consume(), not fetch(): see Pipeline's loop for why a fetch per batch loses time here.
    const queue = new MessageQueue(
      () => consumer.consume({ max_messages: this.#o.batchSize * 2, expires: 30_000 }),
      this.#o.batchSize * 2,
      (err) => this.#o.log(`discovery: consuming failed, retrying: ${err.message}`, 'warn'),
      stallCheckOf(consumer, (line) => this.#o.log(`discovery: ${line}`, 'warn')),
    );
    try {
      while (!this.stopping) {
        const batch = await queue.take(this.#o.batchSize, this.#o.lingerMs, () => this.stopping);
        if (batch.length === 0) continue;
        try {
          await this.#process(batch);
        } catch (err) {
          // ClickHouse or the control plane failed: everything comes back after a pause.
          this.#o.log(`discovery: batch of ${batch.length} failed, will retry: ${message(err)}`, 'warn');
          for (const m of batch) nakQuietly(m, 5000);
          await sleep(1000);
        }
      }
    } finally {
      for (const m of await queue.close()) nakQuietly(m);
    }
  }

  async #process(batch: JsMsg[]): Promise<void> {
    const decoded: Decoded[] = batch.map((m) => {
      // The subject is the truth about who sent it: a carrier may only speak for itself.
      const badSubject = checkSubject('discovery', m.subject);
      if (badSubject) return { m, reports: [], rejected: [], failure: badSubject };
      const r = decodeDiscovery(m.data);
      if (!r.ok) return { m, reports: [], rejected: [], failure: { code: r.code, message: r.message } };
      const first = r.reports[0];
      const mismatch = first ? checkSubject('discovery', m.subject, first.carrier, first.tower) : null;
      if (mismatch) return { m, reports: [], rejected: [], failure: mismatch };
      return { m, reports: r.reports, rejected: r.rejected, failure: null };
    });
    // Done means: its sightings are stored, or (nothing to store) its dead letters are.
    const seqs = batch.map((m) => m.seq);
    const stored = await this.#o.sink.storedSeqsIn(['discovery_sightings', 'dead_letters'], seqs, DISCOVERY_STREAM);
    const sighted = stored.get('discovery_sightings') ?? new Set<number>();
    const dead = stored.get('dead_letters') ?? new Set<number>();
    const todo = decoded.filter((d) => !(d.reports.length > 0 ? sighted.has(d.m.seq) : dead.has(d.m.seq)));
    this.counters.redeliveredSkipped += decoded.length - todo.length;

    await this.#deadLetters(todo.filter((d) => d.failure !== null || d.rejected.length > 0));

    const rows: DiscoverySightingRow[] = [];
    const pending = new Map<string, Pending>();
    for (const d of todo) {
      d.reports.forEach((r, index) => {
        const { owner, outcome } = this.#sight(r, pending);
        rows.push({
          enterprise_id: owner,
          device_id: r.device,
          ts: r.ts,
          carrier: r.carrier,
          tower_id: r.tower,
          model: r.model,
          os: r.os,
          os_version: r.os_version,
          first_seen: r.first_seen,
          reported_enterprise: r.enterprise ?? '',
          outcome,
          stream_seq: d.m.seq,
          report_index: index,
        });
      });
    }
    await this.#write(pending);
    if (rows.length > 0) {
      await this.#o.sink.insert('discovery_sightings', DISCOVERY_SIGHTINGS.encodeRows(rows), {
        token: `discovery_sightings:${this.#token(todo)}`,
        rows: rows.length,
      });
    }
    for (const m of batch) m.ack();
    this.counters.messages += todo.length;
    this.counters.sightings += rows.length;
  }

  /** Decides what one sighting means, folding it into the batch's registry changes. */
  #sight(r: DiscoveryReport, pending: Map<string, Pending>): { owner: string; outcome: SightingOutcome } {
    const known = pending.get(r.device) ?? this.#current(r.device);
    if (known !== undefined) {
      const d = known.device;
      const changed = (r.model !== '' && r.model !== d.model) || (r.os !== '' && r.os !== d.os) || (r.os_version !== '' && r.os_version !== d.os_version);
      if (!changed) {
        // Already rewritten in this batch: keep its last sighting current, at no extra cost.
        if (pending.has(r.device)) pending.set(r.device, { ...known, device: this.#seen(d, r) });
        return { owner: d.enterprise_id, outcome: SIGHTING_OUTCOMES.sighted };
      }
      pending.set(r.device, {
        ...known,
        device: { ...this.#seen(d, r), model: r.model || d.model, os: r.os || d.os, os_version: r.os_version || d.os_version },
      });
      this.counters.updated++;
      return { owner: d.enterprise_id, outcome: SIGHTING_OUTCOMES.updated };
    }
    const enterprise = r.enterprise === undefined ? undefined : this.#o.view.enterprise(r.enterprise);
    // A carrier may only claim devices for enterprises that use it (when the enterprise lists its carriers).
    if (enterprise === undefined || (enterprise.carrier_ids !== undefined && !enterprise.carrier_ids.includes(r.carrier))) {
      this.counters.unclaimed++;
      return { owner: '', outcome: SIGHTING_OUTCOMES.unclaimed };
    }
    const seen = iso(r.ts);
    pending.set(r.device, {
      revision: null,
      device: {
        id: r.device,
        enterprise_id: enterprise.id,
        user_id: null,
        model: r.model,
        os: r.os,
        os_version: r.os_version,
        status: 'discovered',
        registered_at: null,
        first_seen: seen,
        last_seen: seen,
        first_tower_id: r.tower,
        last_tower_id: r.tower,
        carrier_id: r.carrier,
      },
    });
    this.counters.discovered++;
    return { owner: enterprise.id, outcome: SIGHTING_OUTCOMES.discovered };
  }

  #seen(d: Device, r: DiscoveryReport): Device {
    if (d.last_seen !== undefined && Date.parse(d.last_seen) > r.ts) return d;
    return { ...d, last_seen: iso(r.ts), last_tower_id: r.tower, carrier_id: r.carrier };
  }

  /** The registry's entry for a device: the view's, or a newer one this worker just wrote. */
  #current(id: string): { device: Device; revision: number } | undefined {
    const inView = this.#o.view.device(id);
    const viewed = inView === undefined ? undefined : this.#o.view.get('device', inView.enterprise_id, id);
    const mine = this.#written.get(id);
    if (mine !== undefined && (viewed === undefined || viewed.revision < mine.revision)) return mine;
    if (mine !== undefined) this.#written.delete(id);
    return viewed === undefined ? undefined : { device: viewed.value, revision: viewed.revision };
  }

  async #write(pending: Map<string, Pending>): Promise<void> {
    const changes = [...pending.values()];
    // A handful per batch normally; bounded so a backlog replay does not open thousands at once.
    for (let i = 0; i < changes.length; i += 64) {
      await Promise.all(
        changes.slice(i, i + 64).map(async ({ device, revision }) => {
          try {
            const written = revision === null ? await this.#o.store.create('device', device) : await this.#o.store.update('device', device, revision);
            this.#written.set(device.id, { device, revision: written });
          } catch (err) {
            // Onboarded, rejected or discovered by someone else meanwhile: theirs stands.
            if (err instanceof ConflictError) {
              this.counters.conflicts++;
              return;
            }
            throw err;
          }
          if (revision === null) this.#announce(device);
        }),
      );
    }
  }

  #announce(d: Device): void {
    const device = discoveredDeviceView(d, (tower) => this.#o.view.tower(tower)?.location);
    this.#o.nc.publish(enterpriseEventsSubject(d.enterprise_id), encodeEnterpriseEvent({ type: 'device.discovered', device }));
  }

  async #deadLetters(bad: Decoded[]): Promise<void> {
    if (bad.length === 0) return;
    const now = Date.now();
    const rows: DeadLetterRow[] = [];
    for (const d of bad) {
      // One row and one DLQ message per message, its reasons bounded (core/deadLetters.ts).
      const summary = d.failure ? summaryOf([{ index: -1, code: d.failure.code, message: d.failure.message }]) : emptySummary();
      for (const x of d.rejected) addReason(summary, x);
      await this.#js.publish(`dlq.${d.m.subject}`, d.m.data, { msgID: `dlq:discovery:${d.m.seq}`, headers: deadLetterHeaders(d.m.subject, d.m.seq, summary) });
      rows.push(deadLetterRow(DISCOVERY_STREAM, d.m.subject, d.m.seq, summary, d.m.data, now));
      this.counters.deadLetters += summary.total;
    }
    await this.#o.sink.insert('dead_letters', DEAD_LETTERS.encodeRows(rows), { token: `dead_letters:discovery:${this.#token(bad)}`, rows: rows.length });
    for (const d of bad)
      this.#o.log(
        `discovery: dead letter ${d.m.subject} #${d.m.seq}: ${d.failure?.code ?? d.rejected[0]?.code} (${d.failure?.message ?? d.rejected[0]?.message})`,
      );
  }

  #token(of: readonly Decoded[]): string {
    return createHash('sha1')
      .update(of.map((d) => d.m.seq).join(','))
      .digest('hex');
  }
}

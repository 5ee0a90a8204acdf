/**
 * The pipeline service's Prometheus metrics (prom-client), one registry per service: the
 * counters the pipeline, the discovery worker and the remediator already keep, mirrored at
 * scrape time; the durable consumer's lag, read from JetStream at scrape time (cached ~1 s);
 * worker-thread exits; NATS connection events. Nothing on the hot path: a scrape reads plain
 * numbers.
 */
import { jetstreamManager, type ConsumerInfo, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { type NatsConnectionWatch, USAGE_STREAM } from '../core/nats/index.js';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { SinkStats } from './clickhouseSink.js';
import type { DiscoveryCounters } from './discovery.js';
import type { Pipeline, PipelineCounters } from './pipeline.js';
import type { Remediator } from './remediator.js';

/** How long a consumer-info answer is reused (scrapes and the status line share it). */
export const LAG_CACHE_MS = 1_000;
/** How long a scrape waits for JetStream's consumer info before reporting the lag as unknown (NaN). */
export const LAG_TIMEOUT_MS = 1_000;

export interface ConsumerLag {
  /** num_pending + num_ack_pending: messages not yet acked by this consumer. */
  lag: number;
  pending: number;
  ackPending: number;
  /** Messages redelivered and not yet acked. */
  redelivered: number;
}

/**
 * The durable consumer's lag, read at most once per `cacheMs` (concurrent callers share one
 * request); `null` while JetStream does not answer within `timeoutMs`.
 */
export class ConsumerLagReader {
  #jsm: Promise<JetStreamManager> | null = null;
  #cached: { at: number; value: ConsumerLag | null } | null = null;
  #inFlight: Promise<ConsumerLag | null> | null = null;
  /** Failed reads (timeouts, no responders, consumer missing). */
  errors = 0;

  constructor(
    private readonly nc: NatsConnection,
    private readonly consumer: string,
    private readonly options: { stream?: string; cacheMs?: number; timeoutMs?: number } = {},
  ) {}

  read(): Promise<ConsumerLag | null> {
    const cacheMs = this.options.cacheMs ?? LAG_CACHE_MS;
    if (this.#cached && Date.now() - this.#cached.at < cacheMs) return Promise.resolve(this.#cached.value);
    this.#inFlight ??= this.#fetch().finally(() => (this.#inFlight = null));
    return this.#inFlight;
  }

  async #fetch(): Promise<ConsumerLag | null> {
    let value: ConsumerLag | null = null;
    try {
      if (this.nc.isClosed()) throw new Error('NATS connection closed');
      this.#jsm ??= jetstreamManager(this.nc, { timeout: this.options.timeoutMs ?? LAG_TIMEOUT_MS });
      const info: ConsumerInfo = await (await this.#jsm).consumers.info(this.options.stream ?? USAGE_STREAM, this.consumer);
      value = { lag: info.num_pending + info.num_ack_pending, pending: info.num_pending, ackPending: info.num_ack_pending, redelivered: info.num_redelivered };
    } catch {
      this.#jsm = null;
      this.errors++;
    }
    this.#cached = { at: Date.now(), value };
    return value;
  }
}

/** What the metrics read; every part but the registry's own is optional until the service has it. */
export interface MetricsSources {
  pipeline: Pipeline;
  lag: ConsumerLagReader;
  nats: NatsConnectionWatch;
  sinkStats?: () => SinkStats;
  discovery?: { readonly counters: DiscoveryCounters } | null;
  remediator?: Pick<Remediator, 'counters'> | null;
}

type NumericKeys<T> = { [K in keyof T]: T[K] extends number ? K : never }[keyof T];

/** Pipeline.counters → counters, by name. `insertMs` and `lookupMs` are exported in seconds. */
export const PIPELINE_COUNTERS: ReadonlyArray<{ field: NumericKeys<PipelineCounters>; name: string; help: string; scale?: number }> = [
  { field: 'fetched', name: 'towerwatch_pipeline_fetched_messages_total', help: 'JetStream messages (frames) taken from the consumer' },
  { field: 'messages', name: 'towerwatch_pipeline_messages_total', help: 'messages (frames) processed, stored and acked' },
  { field: 'events', name: 'towerwatch_pipeline_events_total', help: 'usage events decoded and evaluated' },
  { field: 'stored', name: 'towerwatch_pipeline_stored_rows_total', help: 'app_usage rows inserted into ClickHouse' },
  { field: 'violations', name: 'towerwatch_pipeline_violations_total', help: 'events denied by a policy' },
  { field: 'unregistered', name: 'towerwatch_pipeline_unregistered_events_total', help: 'events of devices not registered (stored, not enforced)' },
  { field: 'deadLetters', name: 'towerwatch_pipeline_dead_letters_total', help: 'rejected events and messages written to dead_letters' },
  { field: 'deadLetterMessages', name: 'towerwatch_pipeline_dlq_messages_total', help: 'messages published to the USAGE_DLQ stream' },
  {
    field: 'redeliveredSkipped',
    name: 'towerwatch_pipeline_redelivered_skipped_total',
    help: 'redelivered messages found already stored, acked without processing',
  },
  { field: 'remediations', name: 'towerwatch_pipeline_remediation_requests_total', help: 'remediation requests published to REMEDIATION' },
  { field: 'batches', name: 'towerwatch_pipeline_batches_total', help: 'group commits stored and acked (each holds one or more batches)' },
  { field: 'insertMs', name: 'towerwatch_pipeline_insert_seconds_total', help: 'time spent inserting group commits into ClickHouse', scale: 1 / 1000 },
  {
    field: 'lookupMs',
    name: 'towerwatch_pipeline_stored_lookup_seconds_total',
    help: 'time spent looking up which messages of a batch are stored already (redelivery check)',
    scale: 1 / 1000,
  },
  { field: 'publishRetries', name: 'towerwatch_pipeline_publish_retries_total', help: 'JetStream publishes retried through a broker blip' },
  {
    field: 'batchesHandedBack',
    name: 'towerwatch_pipeline_batches_handed_back_total',
    help: 'batches handed back (nak) because NATS or ClickHouse stayed away through the retries',
  },
];

export const DISCOVERY_COUNTERS: ReadonlyArray<{ field: NumericKeys<DiscoveryCounters>; name: string; help: string }> = [
  { field: 'messages', name: 'towerwatch_discovery_messages_total', help: 'DISCOVERY messages processed and acked' },
  { field: 'sightings', name: 'towerwatch_discovery_sightings_total', help: 'device sightings stored' },
  { field: 'discovered', name: 'towerwatch_discovery_discovered_devices_total', help: 'new devices added to the registry as discovered' },
  { field: 'updated', name: 'towerwatch_discovery_updated_devices_total', help: 'registry entries rewritten for a new model or OS' },
  { field: 'unclaimed', name: 'towerwatch_discovery_unclaimed_sightings_total', help: 'sightings of devices no served enterprise claims' },
  { field: 'conflicts', name: 'towerwatch_discovery_conflicts_total', help: 'registry writes lost to a concurrent writer' },
  { field: 'deadLetters', name: 'towerwatch_discovery_dead_letters_total', help: 'bad reports and messages sent to DISCOVERY_DLQ' },
  { field: 'redeliveredSkipped', name: 'towerwatch_discovery_redelivered_skipped_total', help: 'redelivered messages found already stored' },
];

export const REMEDIATION_COUNTERS: ReadonlyArray<{ field: keyof Remediator['counters']; name: string; help: string }> = [
  { field: 'executed', name: 'towerwatch_remediation_executed_total', help: 'remediation commands sent to towers (any outcome but skipped)' },
  { field: 'skipped', name: 'towerwatch_remediation_skipped_total', help: 'automatic remediations skipped by the enterprise plan' },
  { field: 'duplicates', name: 'towerwatch_remediation_duplicates_total', help: 'requests whose action was already recorded' },
  { field: 'rejected', name: 'towerwatch_remediation_rejected_total', help: 'undecodable remediation requests dropped' },
  { field: 'consumeRestarts', name: 'towerwatch_remediation_consume_restarts_total', help: 'times the REMEDIATION consumer was restarted after a failure' },
];

/** ConsumerLagReader → gauges, by name; NaN while JetStream does not answer. */
export const LAG_GAUGES: ReadonlyArray<{ field: keyof ConsumerLag; name: string; help: string }> = [
  {
    field: 'lag',
    name: 'towerwatch_pipeline_consumer_lag_messages',
    help: 'messages of USAGE not yet acked by the durable consumer (num_pending + num_ack_pending); NaN when JetStream does not answer',
  },
  { field: 'pending', name: 'towerwatch_pipeline_consumer_pending_messages', help: 'messages of USAGE not yet delivered to the consumer (num_pending)' },
  { field: 'ackPending', name: 'towerwatch_pipeline_consumer_ack_pending_messages', help: 'messages delivered and not yet acked (num_ack_pending)' },
  { field: 'redelivered', name: 'towerwatch_pipeline_consumer_redelivered_messages', help: 'messages redelivered and not yet acked (num_redelivered)' },
];

/**
 * A counter whose value is read from `read()` at scrape time. Prometheus counters only go up,
 * so it is advanced by the increase since the last scrape.
 */
function mirrored(registry: Registry, name: string, help: string, read: () => number | undefined): void {
  let last = 0;
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      const v = read();
      if (v !== undefined && Number.isFinite(v) && v > last) {
        this.inc(v - last);
        last = v;
      }
    },
  });
}

function gauge(registry: Registry, name: string, help: string, read: () => number | undefined | Promise<number | undefined>): void {
  new Gauge({
    name,
    help,
    registers: [registry],
    async collect() {
      const v = await read();
      this.set(v ?? Number.NaN);
    },
  });
}

/**
 * The registry of one pipeline service. Created before the service's parts exist (so a
 * scrape during start-up answers); {@link attach} gives it what to read.
 */
export class PipelineMetrics {
  readonly registry = new Registry();
  #s: MetricsSources | null = null;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'towerwatch_pipeline_' });
    const r = this.registry;
    for (const c of PIPELINE_COUNTERS) mirrored(r, c.name, c.help, () => (this.#s ? this.#s.pipeline.counters[c.field] * (c.scale ?? 1) : undefined));
    mirrored(r, 'towerwatch_pipeline_insert_retries_total', 'ClickHouse inserts retried', () =>
      this.#s ? (this.#s.sinkStats?.().retries ?? this.#s.pipeline.counters.insertRetries) : undefined,
    );
    mirrored(
      r,
      'towerwatch_pipeline_insert_failures_total',
      'ClickHouse inserts that failed for good (retries spent or rejected)',
      () => this.#s?.sinkStats?.().failures,
    );
    gauge(r, 'towerwatch_pipeline_policies', 'enterprise policy modules in use', () =>
      this.#s ? Object.keys(this.#s.pipeline.counters.policyVersions).length : undefined,
    );

    gauge(r, 'towerwatch_pipeline_worker_threads', 'worker threads alive in the pool', () => this.#s?.pipeline.workerThreads().length);
    mirrored(
      r,
      'towerwatch_pipeline_worker_exits_total',
      'worker threads that exited while the pipeline ran (piscina starts a replacement)',
      () => this.#s?.pipeline.counters.workersLost,
    );
    mirrored(r, 'towerwatch_pipeline_worker_errors_total', 'errors raised by idle worker threads', () => this.#s?.pipeline.counters.workerErrors);

    // One JetStream request per scrape at most (cached), shared by the lag gauges.
    for (const g of LAG_GAUGES) gauge(r, g.name, g.help, async () => (await this.#s?.lag.read())?.[g.field]);
    mirrored(r, 'towerwatch_pipeline_consumer_info_errors_total', 'consumer-info requests that failed or timed out', () => this.#s?.lag.errors);

    gauge(r, 'towerwatch_pipeline_nats_connected', '1 while the NATS connection is up', () => (this.#s ? Number(this.#s.nats.isConnected()) : undefined));
    mirrored(r, 'towerwatch_pipeline_nats_disconnects_total', 'NATS disconnects', () => this.#s?.nats.disconnects);
    mirrored(r, 'towerwatch_pipeline_nats_reconnects_total', 'NATS reconnects', () => this.#s?.nats.reconnects);

    for (const c of DISCOVERY_COUNTERS) mirrored(r, c.name, c.help, () => this.#s?.discovery?.counters[c.field]);
    for (const c of REMEDIATION_COUNTERS) mirrored(r, c.name, c.help, () => this.#s?.remediator?.counters[c.field]);
  }

  attach(sources: MetricsSources): void {
    this.#s = sources;
  }

  /** The exposition text and its content type. */
  async render(): Promise<{ body: string; contentType: string }> {
    return { body: await this.registry.metrics(), contentType: this.registry.contentType };
  }
}

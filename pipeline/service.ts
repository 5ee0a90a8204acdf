/**
 * The pipeline as a running service: ClickHouse opened and migrated, the pipeline started,
 * a one-line status every few seconds, and an orderly stop. Used by `towerwatch pipeline`
 * and `towerwatch up`.
 */
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import { type ClickHouseHandle, migrate, openClickHouse, SCHEMA_VERSION } from '../core/clickhouse/index.js';
import { DEFAULT_MEMORY_TRIM_SECONDS, type Config } from '../core/config.js';
import { startAllocatorTrim } from '../core/allocator.js';
import { ensureStreams, NatsConnectionWatch } from '../core/nats/index.js';
import { ControlPlaneStore, ControlPlaneView, openControlBucket } from '../core/controlPlane/index.js';
import { ClickHouseSink } from './clickhouseSink.js';
import { DiscoveryWorker } from './discovery.js';
import { Remediator } from './remediator.js';
import { RetentionKeeper } from './retentionKeeper.js';
import { Notifier } from './notifier.js';
import { DEFAULT_CONSUMER, Pipeline, type PipelineOptions } from './pipeline.js';
import { snapshotCounters, statusLine } from './status.js';
import { HealthServer, HealthServerListenError } from './healthServer.js';
import { ConsumerLagReader, PipelineMetrics } from './pipelineMetrics.js';
import type { LogLine } from '../core/log.js';

export interface PipelineServiceOptions {
  /**
   * With `pipelinePort` set, /healthz, /readyz and /metrics are served on it (the CLIs pass the
   * whole config); without, none (tests and benchmarks that do not need them).
   */
  config: Pick<Config, 'clickhouseUrl' | 'dataDir' | 'retentionDays'> &
    Partial<
      Pick<
        Config,
        | 'maxDeliver'
        | 'pipelinePort'
        | 'pipelineHost'
        | 'metricsToken'
        | 'natsReplicas'
        | 'clickhouseCluster'
        | 'blockProofGraceSeconds'
        | 'blockSweepSeconds'
        | 'memoryTrimSeconds'
      >
    >;
  nc: NatsConnection;
  natsUrl: string;
  log: LogLine;
  /** Seconds between status lines; 0 for none. @default 5 */
  statusEverySeconds?: number;
  pipeline?: Partial<Omit<PipelineOptions, 'nc' | 'natsUrl' | 'sink'>>;
  /** Run the remediation worker too. @default true */
  remediator?: boolean;
  /** Keep the history tables' TTL on each enterprise's plan (retentionKeeper.ts). @default true */
  retention?: boolean;
  /** Send violations to the enterprises' notification outputs (notifier.ts). @default true */
  notifier?: boolean;
  /** Run the discovery worker too. @default true */
  discovery?: boolean;
}

export interface PipelineService extends AsyncDisposable {
  readonly pipeline: Pipeline;
  readonly clickhouse: ClickHouseHandle;
  readonly remediator: Remediator | null;
  readonly discovery: DiscoveryWorker | null;
  readonly notifier: Notifier | null;
  /** The /healthz, /readyz and /metrics server; null when `config.pipelinePort` was not given. */
  readonly health: HealthServer | null;
  readonly metrics: PipelineMetrics;
  /** Stops everything it started, the pipeline's batches in flight finished first. Idempotent. */
  close(): Promise<void>;
  /** Resolves once close() has finished; rejects as soon as the pipeline loop fails (see Pipeline.closed). */
  closed(): Promise<void>;
}

export async function startPipelineService(opts: PipelineServiceOptions): Promise<PipelineService> {
  const { config, nc, log } = opts;
  const replicas = config.natsReplicas ?? 1;
  // Before the engine and the workers start: the threshold applies to what they allocate.
  const trimmer = startAllocatorTrim((config.memoryTrimSeconds ?? DEFAULT_MEMORY_TRIM_SECONDS) * 1000, log);
  await ensureStreams(nc, { replicas });
  // The control bucket exists with its replicas before the workers open it (with defaults).
  await openControlBucket(nc, { replicas });
  // Bound first: a port in use fails start-up before anything heavy is opened, and probes get
  // answers (not ready yet) while ClickHouse opens and the workers compile.
  const metrics = new PipelineMetrics();
  let health: HealthServer | null = null;
  if (config.pipelinePort !== undefined) {
    try {
      health = await HealthServer.start({
        port: config.pipelinePort,
        host: config.pipelineHost ?? '127.0.0.1',
        metricsToken: config.metricsToken ?? null,
        metrics,
        log,
      });
    } catch (err) {
      if (err instanceof HealthServerListenError)
        throw new Error(`pipeline: health and metrics server ${err.message}; set TOWERWATCH_PIPELINE_PORT to a free port (0 picks one)`, { cause: err });
      throw err;
    }
    log(`pipeline: health and metrics on ${health.url} (/healthz /readyz /metrics)`);
  }
  const clickhouse = await openClickHouse({ clickhouseUrl: config.clickhouseUrl, dataDir: config.dataDir, cluster: config.clickhouseCluster ?? null });
  try {
    const migrated = await migrate(clickhouse, { retentionDays: config.retentionDays });
    log(
      `pipeline: ClickHouse ${clickhouse.embedded ? 'embedded' : 'server'} at ${clickhouse.location}${clickhouse.cluster === null ? '' : ` (cluster ${clickhouse.cluster}, through *_all)`}, schema v${SCHEMA_VERSION}${migrated.applied.length ? ` (applied ${migrated.applied.join(', ')})` : ''}`,
    );
  } catch (err) {
    await clickhouse.close();
    await health?.close();
    throw err;
  }
  const withRemediator = opts.remediator ?? true;
  const withDiscovery = opts.discovery ?? true;
  const withRetention = opts.retention ?? true;
  const view = withRemediator || withDiscovery || withRetention ? await ControlPlaneView.open(nc, { replicas }) : null;
  // Before the pipeline stores anything: until the keeper runs, the tables keep the default for everyone.
  const retention = view && withRetention ? await RetentionKeeper.start({ view, clickhouse, defaultDays: config.retentionDays, log }) : null;
  const sink = new ClickHouseSink(clickhouse, {
    onRetry: (r) => log(`pipeline: ClickHouse insert failed (attempt ${r.attempt}), retrying in ${r.delayMs} ms: ${(r.error as Error).message}`, 'warn'),
  });
  const pipeline = await Pipeline.start({
    nc,
    natsUrl: opts.natsUrl,
    sink,
    ...opts.pipeline,
    // After the spread: an override given as undefined keeps the service's value.
    cacheDir: opts.pipeline?.cacheDir ?? join(config.dataDir, 'wasm-cache'),
    log: opts.pipeline?.log ?? log,
    maxDeliver: opts.pipeline?.maxDeliver ?? config.maxDeliver,
  });
  let remediator: Remediator | null = null;
  let discovery: DiscoveryWorker | null = null;
  const notifier = (opts.notifier ?? true) ? await Notifier.start({ nc, log, replicas }) : null;
  if (view && withRemediator) {
    remediator = await Remediator.start({
      nc,
      sink,
      clickhouse,
      view,
      log,
      replicas,
      ...(config.blockSweepSeconds === undefined ? {} : { sweepEveryMs: config.blockSweepSeconds * 1000 }),
      ...(config.blockProofGraceSeconds === undefined ? {} : { proofGraceMs: config.blockProofGraceSeconds * 1000 }),
    });
    log('pipeline: remediation worker consuming REMEDIATION');
  }
  if (view && withDiscovery) {
    discovery = await DiscoveryWorker.start({ nc, sink, view, store: await ControlPlaneStore.open(nc, { replicas }), log });
    log('pipeline: discovery worker consuming DISCOVERY');
  }
  const consumer = opts.pipeline?.consumer ?? DEFAULT_CONSUMER;
  const lag = new ConsumerLagReader(nc, consumer);
  const natsWatch = new NatsConnectionWatch(nc);
  metrics.attach({ pipeline, lag, nats: natsWatch, sinkStats: () => sink.stats(), discovery, remediator });
  health?.attach({ pipeline, nats: natsWatch, clickhouse });
  const every = opts.statusEverySeconds ?? 5;
  let before = snapshotCounters(pipeline.counters);
  const timer =
    every > 0
      ? setInterval(() => {
          void lag
            .read()
            .then((l) => l?.lag ?? null)
            .then((lag) => {
              const now = snapshotCounters(pipeline.counters);
              const d = discovery?.counters;
              log(
                `pipeline: ${statusLine(now, before, every, lag)}${d ? ` · discovery ${d.sightings.toLocaleString('en-US')} sightings, ${d.discovered.toLocaleString('en-US')} new devices` : ''}`,
              );
              before = now;
            });
        }, every * 1000)
      : null;
  timer?.unref();
  let closing: Promise<void> | null = null;
  let ended!: (closing: Promise<void>) => void;
  const closed = new Promise<void>((resolve) => (ended = resolve));
  // A failed close() is the caller's to handle, whether or not anyone asked for closed().
  closed.catch(() => undefined);
  const service: PipelineService = {
    pipeline,
    clickhouse,
    remediator,
    discovery,
    notifier,
    health,
    metrics,
    close() {
      closing ??= (async () => {
        if (timer) clearInterval(timer);
        trimmer?.close();
        // Probes see the service go away with it; scrapes during the drain are not needed.
        await health?.close();
        natsWatch.close();
        await Promise.all([remediator?.close(), discovery?.close(), retention?.close(), notifier?.close()]);
        await view?.close();
        await pipeline.close();
        await sink.close();
        await clickhouse.close();
      })();
      ended(closing);
      return closing;
    },
    closed: () => Promise.all([pipeline.closed(), closed]).then(() => undefined),
    [Symbol.asyncDispose]: () => service.close(),
  };
  return service;
}

/**
 * The pipeline as a running service: ClickHouse opened and migrated, the pipeline started,
 * a one-line status every few seconds, and an orderly stop. Used by `towerwatch pipeline`
 * and `towerwatch up`.
 */
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { openClickHouse, type ClickHouseHandle } from '../core/clickhouse.js';
import type { Config } from '../core/config.js';
import { migrate, SCHEMA_VERSION } from '../core/schema.js';
import { ensureStreams, USAGE_STREAM } from '../core/streams.js';
import { ControlPlaneStore, ControlPlaneView } from '../core/controlPlane/index.js';
import { ClickHouseSink } from './clickhouseSink.js';
import { DiscoveryWorker } from './discovery.js';
import { Remediator } from './remediator.js';
import { DEFAULT_CONSUMER, Pipeline, type PipelineOptions } from './pipeline.js';
import { snapshotCounters, statusLine } from './status.js';

export interface PipelineServiceOptions {
  config: Pick<Config, 'clickhouseUrl' | 'dataDir' | 'retentionDays'> & Partial<Pick<Config, 'maxDeliver'>>;
  nc: NatsConnection;
  natsUrl: string;
  log: (line: string) => void;
  /** Seconds between status lines; 0 for none. @default 5 */
  statusEverySeconds?: number;
  pipeline?: Partial<Omit<PipelineOptions, 'nc' | 'natsUrl' | 'sink'>>;
  /** Run the remediation worker too. @default true */
  remediator?: boolean;
  /** Run the discovery worker too. @default true */
  discovery?: boolean;
}

export interface PipelineService {
  readonly pipeline: Pipeline;
  readonly clickhouse: ClickHouseHandle;
  readonly remediator: Remediator | null;
  readonly discovery: DiscoveryWorker | null;
  stop(): Promise<void>;
}

export async function startPipelineService(opts: PipelineServiceOptions): Promise<PipelineService> {
  const { config, nc, log } = opts;
  await ensureStreams(nc);
  const clickhouse = await openClickHouse({ clickhouseUrl: config.clickhouseUrl, dataDir: config.dataDir });
  try {
    const migrated = await migrate(clickhouse, { retentionDays: config.retentionDays });
    log(`pipeline: ClickHouse ${clickhouse.embedded ? 'embedded' : 'server'} at ${clickhouse.location}, schema v${SCHEMA_VERSION}${migrated.applied.length ? ` (applied ${migrated.applied.join(', ')})` : ''}`);
  } catch (err) {
    await clickhouse.close();
    throw err;
  }
  const sink = new ClickHouseSink(clickhouse, {
    onRetry: (r) => log(`pipeline: ClickHouse insert failed (attempt ${r.attempt}), retrying in ${r.delayMs} ms: ${(r.error as Error).message}`),
  });
  const pipeline = await Pipeline.start({
    nc,
    natsUrl: opts.natsUrl,
    sink,
    cacheDir: join(config.dataDir, 'wasm-cache'),
    log,
    maxDeliver: config.maxDeliver,
    ...opts.pipeline,
  });
  const withRemediator = opts.remediator ?? true;
  const withDiscovery = opts.discovery ?? true;
  const view = withRemediator || withDiscovery ? await ControlPlaneView.open(nc) : null;
  let remediator: Remediator | null = null;
  let discovery: DiscoveryWorker | null = null;
  if (view && withRemediator) {
    remediator = await Remediator.start({ nc, clickhouse, view, log });
    log('pipeline: remediation worker consuming REMEDIATION');
  }
  if (view && withDiscovery) {
    discovery = await DiscoveryWorker.start({ nc, clickhouse, view, store: await ControlPlaneStore.open(nc), log });
    log('pipeline: discovery worker consuming DISCOVERY');
  }
  const jsm = await jetstreamManager(nc);
  const consumer = opts.pipeline?.consumer ?? DEFAULT_CONSUMER;
  const every = opts.statusEverySeconds ?? 5;
  let before = snapshotCounters(pipeline.counters);
  const timer =
    every > 0
      ? setInterval(() => {
          void jsm.consumers
            .info(USAGE_STREAM, consumer)
            .then((info) => info.num_pending + info.num_ack_pending, () => null)
            .then((lag) => {
              const now = snapshotCounters(pipeline.counters);
              const d = discovery?.counters;
              log(`pipeline: ${statusLine(now, before, every, lag)}${d ? ` · discovery ${d.sightings.toLocaleString('en-US')} sightings, ${d.discovered.toLocaleString('en-US')} new devices` : ''}`);
              before = now;
            });
        }, every * 1000)
      : null;
  timer?.unref();
  let stopping: Promise<void> | null = null;
  return {
    pipeline,
    clickhouse,
    remediator,
    discovery,
    stop() {
      stopping ??= (async () => {
        if (timer) clearInterval(timer);
        await Promise.all([remediator?.stop(), discovery?.stop()]);
        await view?.close();
        await pipeline.stop();
        await sink.close();
        await clickhouse.close();
      })();
      return stopping;
    },
  };
}

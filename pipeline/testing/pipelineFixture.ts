/**
 * Test helper: a Pipeline in this process on a test's connection and temporary ClickHouse
 * (core/testing: connectControlPlane, openTempClickHouse), with two worker threads and the
 * compiled policies cached beside the ClickHouse data. The test closes it.
 *
 * ```ts
 * ({ dataDir, ch } = await openTempClickHouse('tw-x-', { retentionDays: 30 }));
 * pipeline = await startTestPipeline(nats, nc, { dataDir, ch }, { maxDeliver: 3, retryDelayMs: 200 });
 * ```
 */
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { ClickHouseHandle } from '../../core/clickhouse/index.js';
import type { NatsFixture } from '../../core/testing/natsFixture.js';
import { until } from '../../core/testing/until.js';
import { ClickHouseSink } from '../clickhouseSink.js';
import { DEFAULT_CONSUMER, Pipeline, type PipelineOptions, type PipelineTuning } from '../pipeline.js';

export function startTestPipeline(
  nats: NatsFixture,
  nc: NatsConnection,
  clickhouse: { dataDir: string; ch: ClickHouseHandle },
  tuning: Pick<PipelineTuning, 'maxDeliver' | 'retryDelayMs'> & Pick<PipelineOptions, 'log'>,
): Promise<Pipeline> {
  return Pipeline.start({ nc, natsUrl: nats.url, sink: new ClickHouseSink(clickhouse.ch), threads: 2, cacheDir: join(clickhouse.dataDir, 'wasm'), ...tuning });
}

/** Waits until the pipeline's consumer has nothing pending and nothing unacked (every message stored or dead-lettered). */
export async function consumerSettled(nc: NatsConnection, consumer = DEFAULT_CONSUMER, timeoutMs = 60_000): Promise<void> {
  const jsm = await jetstreamManager(nc);
  await until(
    async () => {
      const info = await jsm.consumers.info('USAGE', consumer);
      return info.num_ack_pending === 0 && info.num_pending === 0;
    },
    timeoutMs,
    'every message acked',
  );
}

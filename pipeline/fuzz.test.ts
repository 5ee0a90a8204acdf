/**
 * Fuzzed frames (fixtures/frameFuzz.ts) through the real pipeline: a real nats-server, worker
 * threads, embedded ClickHouse. Whatever comes in, the pipeline keeps running, every message
 * is stored exactly as expected or has its dead letter with a reason, nothing stays unacked,
 * and no event is stored twice. TOWERWATCH_FUZZ_SEED replays a run.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import fc from 'fast-check';
import type { ClickHouseHandle } from '../core/clickhouse/index.js';
import { USAGE_DLQ_STREAM } from '../core/nats/index.js';
import { openTempClickHouse } from '../core/testing/clickhouseFixture.js';
import { connectControlPlane } from '../core/testing/controlPlaneFixture.js';
import { withNats } from '../core/testing/natsFixture.js';
import { until } from '../core/testing/until.js';
import { frameCases, type FrameCase } from '../fixtures/frameFuzz.js';
import { seedWorld } from '../fixtures/seed.js';
import { generateWorld } from '../fixtures/world.js';
import type { Pipeline } from './pipeline.js';
import { startTestPipeline } from './testing/pipelineFixture.js';

const CASES = 300;
const SEED = Number(process.env['TOWERWATCH_FUZZ_SEED'] || 20261204);
const nats = await withNats();

let nc: NatsConnection;
let dataDir: string;
let ch: ClickHouseHandle;
let pipeline: Pipeline;
let ended = false;

before(async () => {
  ({ nc } = await connectControlPlane(nats, (s) => seedWorld(s, generateWorld({ seed: 5, enterprises: 2, usersPerEnterprise: 2, towers: 3 }))));
  ({ dataDir, ch } = await openTempClickHouse('tw-fuzz-', { retentionDays: 3650 }));
  pipeline = await startTestPipeline(nats, nc, { dataDir, ch }, { maxDeliver: 2, retryDelayMs: 100 });
  void pipeline.closed().finally(() => (ended = true));
});
after(async () => {
  await pipeline?.close();
  await ch?.close();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

const rows = async <T>(query: string): Promise<T[]> => (await ch.client.query({ query, format: 'JSONEachRow' })).json<T>();

test(`${CASES} fuzzed messages: each fully stored or dead-lettered with its reason, all acked, none twice (seed ${SEED})`, async (t) => {
  const [cases] = fc.sample(frameCases(CASES), { seed: SEED, numRuns: 1 }) as [FrameCase[]];
  const js = jetstream(nc);
  const bySeq = new Map<number, FrameCase>();
  for (let i = 0; i < cases.length; i += 30) {
    const chunk = cases.slice(i, i + 30);
    const acks = await Promise.all(chunk.map((c) => js.publish(c.subject, c.bytes)));
    acks.forEach((a, j) => bySeq.set(a.seq, chunk[j] as FrameCase));
  }
  const lastSeq = Math.max(...bySeq.keys());
  const jsm = await jetstreamManager(nc);
  await until(
    async () => {
      const info = await jsm.consumers.info('USAGE', 'pipeline');
      return info.ack_floor.stream_seq >= lastSeq && info.num_ack_pending === 0 && info.num_pending === 0;
    },
    80_000,
    'every message acked',
  );

  const stored = new Map(
    (
      await rows<{ seq: string; n: string; ids: string }>(
        'SELECT stream_seq AS seq, count() AS n, uniqExact(event_id) AS ids FROM app_usage GROUP BY stream_seq',
      )
    ).map((r) => [Number(r.seq), r]),
  );
  const dead = new Map(
    (
      await rows<{ seq: string; n: string; code: string; total: string }>(
        "SELECT stream_seq AS seq, count() AS n, any(code) AS code, sum(rejected_count) AS total FROM dead_letters WHERE stream = 'USAGE' GROUP BY stream_seq",
      )
    ).map((r) => [Number(r.seq), r]),
  );
  const kinds = new Map<string, number>();
  const problems: string[] = [];
  for (const [seq, c] of bySeq) {
    kinds.set(c.kind, (kinds.get(c.kind) ?? 0) + 1);
    const s = stored.get(seq);
    const n = Number(s?.n ?? 0);
    if (n !== c.stored) problems.push(`#${seq} ${c.kind}: stored ${n}, expected ${c.stored}`);
    if (s && Number(s.ids) !== n) problems.push(`#${seq} ${c.kind}: ${n} rows but ${s.ids} distinct event ids`);
    const d = dead.get(seq);
    if (c.deadLetter !== (d !== undefined)) problems.push(`#${seq} ${c.kind}: dead letter ${d ? `present (${d.code})` : 'missing'}`);
    if (d && (Number(d.n) !== 1 || d.code === '' || Number(d.total) < 1)) problems.push(`#${seq} ${c.kind}: ${d.n} dead-letter rows, code '${d.code}'`);
  }
  t.diagnostic(`cases: ${[...kinds].map(([k, n]) => `${k} ${n}`).join(', ')}`);
  assert.deepEqual(problems, []);
  const expectedStored = cases.reduce((n, c) => n + c.stored, 0);
  assert.equal(Number((await rows<{ n: string }>('SELECT count() AS n FROM app_usage'))[0]?.n), expectedStored);
  const expectedDead = cases.filter((c) => c.deadLetter).length;
  assert.equal((await jsm.streams.info(USAGE_DLQ_STREAM)).state.messages, expectedDead, 'one DLQ message per dead-lettered message');
  assert.equal(pipeline.counters.failedMessages, 0, 'no message made a worker fail');
  assert.equal(ended, false, 'the pipeline is still running');
});

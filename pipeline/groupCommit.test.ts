/**
 * The group commit (pipeline.ts): alerts leave when a batch's worker is done, not when its rows
 * are stored; batches evaluated while an insert runs are stored together; a group whose insert
 * ClickHouse refuses is stored batch by batch, each row once. Real nats-server and chdb; the
 * sink is the real one, wrapped to hold or refuse chosen inserts.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { ClickHouseHandle, InsertBody, InsertTable } from '../core/clickhouse/index.js';
import { alertsSubject, decodeAlerts } from '../core/live.js';
import { openTempClickHouse } from '../core/testing/clickhouseFixture.js';
import { connectControlPlane } from '../core/testing/controlPlaneFixture.js';
import { withNats } from '../core/testing/natsFixture.js';
import { until } from '../core/testing/until.js';
import { briefEvent, publishFrame } from '../fixtures/briefEvents.js';
import { seedWorld } from '../fixtures/seed.js';
import { BRIEF, generateWorld } from '../fixtures/world.js';
import { ClickHouseSink, ClickHouseSinkError, SinkErrorCode, type InsertOptions, type RowSink } from './clickhouseSink.js';
import { Pipeline } from './pipeline.js';
import { consumerSettled } from './testing/pipelineFixture.js';

const nats = await withNats();
/** The pipeline's commit interval here: long enough to see, short enough to wait for. */
const INTERVAL_MS = 400;
const world = generateWorld({ seed: 21, enterprises: 3, usersPerEnterprise: 8, towers: 6 });

/** The real sink, with a hold on app_usage inserts (while `hold` is pending) and refusals on demand. */
class GatedSink implements RowSink {
  readonly appUsageInserts: number[] = [];
  /** When each app_usage insert began (performance.now()). */
  readonly appUsageInsertTimes: number[] = [];
  hold: Promise<void> | null = null;
  /** Refuse the next app_usage insert of more rows than this (once). */
  refuseOver: number | null = null;
  refused = 0;
  constructor(readonly inner: ClickHouseSink) {}

  async insert(table: InsertTable, body: InsertBody, options: InsertOptions): Promise<void> {
    if (table === 'app_usage') {
      if (this.hold !== null) await this.hold;
      const rows = options.rows ?? 0;
      if (this.refuseOver !== null && rows > this.refuseOver) {
        this.refuseOver = null;
        this.refused++;
        throw new ClickHouseSinkError(SinkErrorCode.Permanent, table, 1, 'refused by the test');
      }
      this.appUsageInserts.push(rows);
      this.appUsageInsertTimes.push(performance.now());
    }
    return this.inner.insert(table, body, options);
  }
  storedSeqs(table: InsertTable, seqs: readonly number[], stream?: string): Promise<Set<number>> {
    return this.inner.storedSeqs(table, seqs, stream);
  }
  storedSeqsIn(tables: readonly InsertTable[], seqs: readonly number[], stream?: string): Promise<Map<InsertTable, Set<number>>> {
    return this.inner.storedSeqsIn(tables, seqs, stream);
  }
}

describe('pipeline group commit', () => {
  let nc: NatsConnection;
  let js: JetStreamClient;
  let dataDir: string;
  let ch: ClickHouseHandle;
  let pipeline: Pipeline;
  let sink: GatedSink;
  const alertTimes = new Map<number, number>();

  before(async () => {
    ({ nc, js } = await connectControlPlane(nats, (s) => seedWorld(s, world)));
    ({ dataDir, ch } = await openTempClickHouse('tw-group-', { retentionDays: 30 }));
    sink = new GatedSink(new ClickHouseSink(ch));
    // One message per batch, so that every frame is a batch of its own; room for them all in flight.
    pipeline = await Pipeline.start({
      nc,
      natsUrl: nats.url,
      sink,
      threads: 2,
      batchMessages: 1,
      lingerMs: 0,
      maxInFlight: 32,
      commitIntervalMs: INTERVAL_MS,
      cacheDir: join(dataDir, 'wasm'),
    });
    await pipeline.ready();
    nc.subscribe(alertsSubject(BRIEF.acme), {
      callback: (_err, msg) => {
        const decoded = decodeAlerts(msg.data);
        if (!decoded.ok) return;
        // alert_id is `<carrier>:<tower>:<event_id>`.
        for (const a of decoded.value) alertTimes.set(Number(a.alert_id.split(':')[2]), Date.now());
      },
    });
  });
  after(async () => {
    await pipeline?.close();
    await ch?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  const count = async (sql: string): Promise<number> => {
    const rs = await ch.client.query({ query: sql, format: 'JSONEachRow' });
    return Number((await rs.json<{ n: string }>())[0]?.n ?? 0);
  };
  const settled = (): Promise<void> => consumerSettled(nc);
  /** `frames` frames of `perFrame` denied Slack uploads (one alert each), event ids from `first`. */
  const publishFrames = async (first: number, frames: number, perFrame: number): Promise<number[]> => {
    const ids: number[] = [];
    for (let f = 0; f < frames; f++) {
      const events = Array.from({ length: perFrame }, (_, i) => briefEvent(first + f * perFrame + i));
      ids.push(...events.map((e) => e.event_id));
      await publishFrame(js, 'att', BRIEF.nycTower, events);
    }
    return ids;
  };

  it('alerts go out while the inserts are held, and the batches evaluated meanwhile are stored in one insert', async () => {
    let release!: () => void;
    sink.hold = new Promise<void>((r) => (release = r));
    try {
      const ids = await publishFrames(1, 12, 5);
      // Every alert arrives though no row can be stored yet.
      await until(async () => ids.every((id) => alertTimes.has(id)), 30_000, 'every alert, inserts held');
      assert.equal(await count('SELECT count() AS n FROM app_usage'), 0, 'nothing stored while held');
    } finally {
      sink.hold = null;
      release();
    }
    await settled();
    assert.equal(await count('SELECT count() AS n FROM app_usage'), 60);
    assert.equal(await count('SELECT count() AS n FROM violations'), 60);
    assert.equal(await count('SELECT uniqExact(event_id) AS n FROM app_usage'), 60);
    // The first commit took what was evaluated when it started; the rest waited for it as one.
    assert.ok(sink.appUsageInserts.length < 12, `12 batches in ${sink.appUsageInserts.length} inserts: ${sink.appUsageInserts.join(', ')}`);
    assert.ok(Math.max(...sink.appUsageInserts) >= 25, `a group of several batches: ${sink.appUsageInserts.join(', ')}`);
    assert.equal(
      sink.appUsageInserts.reduce((a, b) => a + b, 0),
      60,
    );
  });

  it('a steady trickle is stored in one insert per commit interval at most; its alerts do not wait for it', async () => {
    sink.appUsageInserts.length = 0;
    sink.appUsageInsertTimes.length = 0;
    const sent = new Map<number, number>();
    // 25 frames of one event, one every 50 ms: a batch each, 1.25 s in all.
    for (let f = 0; f < 25; f++) {
      const id = 5_001 + f;
      sent.set(id, Date.now());
      await publishFrame(js, 'att', BRIEF.nycTower, [briefEvent(id)]);
      await new Promise((r) => setTimeout(r, 50));
    }
    await until(async () => [...sent.keys()].every((id) => alertTimes.has(id)), 30_000, 'every alert');
    await settled();
    assert.equal(await count('SELECT uniqExact(event_id) AS n FROM app_usage WHERE event_id BETWEEN 5001 AND 5025'), 25);
    assert.equal(await count('SELECT count() AS n FROM app_usage WHERE event_id BETWEEN 5001 AND 5025'), 25);
    const starts = sink.appUsageInsertTimes;
    assert.ok(starts.length <= 5, `25 batches over 1.25 s in ${starts.length} inserts: ${sink.appUsageInserts.join(', ')}`);
    for (let i = 1; i < starts.length; i++) {
      const gap = (starts[i] as number) - (starts[i - 1] as number);
      assert.ok(gap >= INTERVAL_MS / 2, `inserts ${i - 1} and ${i} began ${gap.toFixed(0)} ms apart`);
    }
    const delays = [...sent].map(([id, at]) => (alertTimes.get(id) as number) - at).sort((a, b) => a - b);
    assert.ok((delays[12] as number) < INTERVAL_MS / 2, `alerts leave before the commit: median ${delays[12]} ms`);
  });

  it('a group insert ClickHouse refuses is stored batch by batch, every row once, every message acked', async () => {
    sink.appUsageInserts.length = 0;
    let release!: () => void;
    sink.hold = new Promise<void>((r) => (release = r));
    sink.refuseOver = 5; // any insert of more than one frame's rows
    try {
      const ids = await publishFrames(1_001, 10, 5);
      await until(async () => ids.every((id) => alertTimes.has(id)), 30_000, 'every alert');
    } finally {
      sink.hold = null;
      release();
    }
    await settled();
    assert.equal(sink.refused, 1, 'a group insert was refused');
    assert.equal(await count('SELECT count() AS n FROM app_usage WHERE event_id BETWEEN 1001 AND 1050'), 50);
    assert.equal(await count('SELECT uniqExact(event_id) AS n FROM app_usage WHERE event_id BETWEEN 1001 AND 1050'), 50);
    assert.equal(await count('SELECT count() AS n FROM violations WHERE event_id BETWEEN 1001 AND 1050'), 50);
    assert.equal(await count('SELECT count() AS n FROM dead_letters'), 0, 'nothing dead-lettered: each batch stored on its own');
    assert.ok(pipeline.counters.processingFailures === 0, 'no batch failed on its own');
  });
});

/**
 * Crash safety of `towerwatch pipeline`, run as real child processes against a real
 * nats-server and the embedded ClickHouse:
 * - SIGKILLed several times mid-stream and restarted on the same data dir, it still stores every
 *   published event exactly once (at-least-once delivery made exact by the redelivery check);
 * - two processes sharing the durable consumer (each with its own embedded data dir) split the
 *   stream between them and store every event once in total.
 *
 * The data dirs are opened here only after their process has exited: one process owns an
 * embedded data dir, and this process may hold one at a time.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { jetstream, jetstreamManager, type ConsumerInfo, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { openClickHouse, queryNumber } from '../core/clickhouse/index.js';
import { ControlPlaneStore } from '../core/controlPlane/index.js';
import { ensureStreams, USAGE_STREAM } from '../core/nats/index.js';
import { projectionTotalQuery } from '../core/testing/rollups.js';
import { killAllPipelines, PipelineProcess } from '../core/testing/pipelineProcess.js';
import { withNats } from '../core/testing/natsFixture.js';
import { publishTraffic, type PublishProgress } from '../fixtures/publisher.js';
import { seedWorld } from '../fixtures/seed.js';
import { createTrafficGenerator } from '../fixtures/traffic.js';
import { generateWorld } from '../fixtures/world.js';
import { createWorldClassifier, type WorldClassifier } from '../fixtures/worldPolicies.js';
import { DEFAULT_CONSUMER } from './pipeline.js';

/** Short, so that what a killed process had in hand comes back in seconds, not a minute. */
const ACK_WAIT_SECONDS = 3;

const nats = await withNats();
const world = generateWorld({ seed: 9, enterprises: 3, usersPerEnterprise: 10, towers: 6 });

/** `towerwatch pipeline` on the test's nats-server and its own data directory (embedded ClickHouse). */
const pipelineProcess = (name: string, dataDir: string, args: readonly string[] = []): PipelineProcess =>
  new PipelineProcess(name, { natsUrl: nats.url, dataDir, args: ['--ack-wait-seconds', String(ACK_WAIT_SECONDS), ...args] });

const tempDirs: string[] = [];

after(async () => {
  await killAllPipelines();
  await Promise.allSettled(tempDirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(label: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `towerwatch-crash-${label}-`));
  tempDirs.push(dir);
  return dir;
}

/** Messages of the stream acked by the consumer: every delivered one that is not pending an ack. */
function acked(info: ConsumerInfo | null): number {
  return info ? info.delivered.stream_seq - info.num_ack_pending : 0;
}

async function consumerInfo(jsm: JetStreamManager): Promise<ConsumerInfo | null> {
  return jsm.consumers.info(USAGE_STREAM, DEFAULT_CONSUMER).catch(() => null);
}

/** Resolves once the consumer has delivered and seen acked every message of the stream. */
async function waitDrained(jsm: JetStreamManager, alive: readonly PipelineProcess[], timeoutMs: number): Promise<ConsumerInfo> {
  const deadline = Date.now() + timeoutMs;
  const lastSeq = (await jsm.streams.info(USAGE_STREAM)).state.last_seq;
  for (;;) {
    const info = await consumerInfo(jsm);
    if (info && info.num_pending === 0 && info.num_ack_pending === 0 && info.ack_floor.stream_seq >= lastSeq) return info;
    for (const p of alive) if (p.exit !== null) throw new Error(`${p.name} exited (${JSON.stringify(p.exit)}) before the consumer drained:\n${p.output}`);
    if (Date.now() > deadline) {
      throw new Error(
        `consumer not drained after ${timeoutMs} ms: ${JSON.stringify(info && { pending: info.num_pending, ackPending: info.num_ack_pending, ackFloor: info.ack_floor, lastSeq })}`,
      );
    }
    await sleep(100);
  }
}

describe('pipeline crash safety (child processes, embedded ClickHouse)', () => {
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let classifier: WorldClassifier;

  // No process outlives its test: a leftover one would go on consuming from the next test's consumer.
  afterEach(killAllPipelines);

  before(async () => {
    nc = await nats.connect('crash test');
    jsm = await jetstreamManager(nc);
    await seedWorld(await ControlPlaneStore.open(nc), world);
    await ensureStreams(nc);
    classifier = await createWorldClassifier(world, { cacheDir: join(await tempDir('wasm'), 'cache') });
  });

  /**
   * Publishes new events in frames of 500 at `rate` events/s (0: as fast as acks come), `events`
   * of them or fewer if `signal` aborts first; event ids from `firstEventId`, so that no
   * Nats-Msg-Id of an earlier test repeats (the stream would drop it as a duplicate).
   */
  async function publish(o: { events: number; seed: number; firstEventId: number; rate: number; signal?: AbortSignal }): Promise<PublishProgress> {
    const generator = createTrafficGenerator(world, {
      seed: o.seed,
      firstEventId: o.firstEventId,
      classify: (e) => classifier.classify(e),
      // Recent timestamps: rows older than the retention TTL could be dropped by ClickHouse.
      startTs: Date.now() - 10 * 60_000,
    });
    const summary = await publishTraffic({
      js: jetstream(nc),
      world,
      generator,
      events: o.events,
      rate: o.rate,
      frameSize: 500,
      discoveryPerThousand: 0,
      classify: (e) => classifier.classify(e),
      seed: o.seed,
      ...(o.signal ? { signal: o.signal } : {}),
    });
    if (!o.signal?.aborted) assert.equal(summary.events, o.events);
    assert.equal(summary.badFrames, 0);
    return summary;
  }

  test('SIGKILL mid-stream several times, restart → count() equals distinct events published, no loss, no duplicates', { timeout: 120_000 }, async (t) => {
    const started = performance.now();
    const dataDir = await tempDir('kill');
    // Traffic keeps coming (3,000 events/s) while the pipeline is killed and restarted, until
    // 4 kills have found messages in the process's hands (about 20 s, 60,000 events).
    let publishing = true;
    const stopPublishing = new AbortController();
    const publication = publish({ events: 150_000, seed: 91, firstEventId: 1, rate: 3_000, signal: stopPublishing.signal }).finally(() => (publishing = false));
    publication.catch(() => undefined); // awaited below; not unhandled meanwhile

    const logs: string[] = [];
    const kills: Array<{ round: number; afterMs: number; acked: number; ackPending: number; redelivered: number }> = [];
    let last: PipelineProcess | null = null;
    // Rounds go on while traffic comes in, and until 3 kills at least.
    for (let round = 1; publishing || kills.length < 3; round++) {
      assert.ok(round <= 12, 'publishing took far longer than planned');
      const ackedBefore = acked(await consumerInfo(jsm));
      const p = pipelineProcess(`pipeline #${round}`, dataDir);
      await p.ready();
      // Once this incarnation has stored and acked something (so it is past start-up and every
      // round moves on), kill it at a random moment: mid-fetch, mid-batch, mid-insert or mid-ack.
      const deadline = Date.now() + 30_000;
      let info = await consumerInfo(jsm);
      while (acked(info) <= ackedBefore) {
        if (p.exit !== null) throw new Error(`${p.name} exited (${JSON.stringify(p.exit)}):\n${p.output}`);
        if (Date.now() > deadline) throw new Error(`${p.name} acked nothing in 30 s:\n${p.output}`);
        await sleep(25);
        info = await consumerInfo(jsm);
        // Publishing ended and nothing is left: this one is the final run.
        if (!publishing && info?.num_pending === 0 && info.num_ack_pending === 0) break;
      }
      if (!publishing && info?.num_pending === 0 && info.num_ack_pending === 0) {
        last = p;
        break;
      }
      const afterMs = Math.floor(Math.random() * 1_000);
      await sleep(afterMs);
      info = (await consumerInfo(jsm)) ?? assert.fail('no consumer');
      await p.kill('SIGKILL');
      assert.equal(p.exit?.signal, 'SIGKILL', p.output);
      logs.push(p.output);
      kills.push({ round, afterMs, acked: acked(info), ackPending: info.num_ack_pending, redelivered: info.num_redelivered });
      if (kills.filter((k) => k.ackPending > 0).length >= 4) stopPublishing.abort();
    }
    const published = await publication;
    const expectedViolations = published.expectedViolations ?? assert.fail('no classifier');
    assert.ok(expectedViolations > 0);
    const frames = published.frames;
    const lastSeq = (await jsm.streams.info(USAGE_STREAM)).state.last_seq;
    t.diagnostic(
      `published ${published.events} events in ${frames} frames (seq ≤ ${lastSeq}), ${expectedViolations} violations expected, in ${(published.elapsedMs / 1000).toFixed(1)} s`,
    );
    t.diagnostic(
      `SIGKILLs: ${kills.map((k) => `#${k.round} ${k.afterMs} ms after its first ack (${k.acked}/${lastSeq} acked, ${k.ackPending} in hand, ${k.redelivered} redelivered)`).join('; ')}`,
    );
    // Kills that found messages in the process's hands (fetched, not acked) are what this test is about.
    assert.ok(kills.filter((k) => k.ackPending > 0).length >= 3, `at least 3 kills with messages in hand, got ${kills.length} kills`);

    last ??= pipelineProcess('pipeline (final)', dataDir);
    await last.ready();
    const info = await waitDrained(jsm, [last], 60_000);
    const exit = await last.kill('SIGTERM');
    logs.push(last.output);
    assert.deepEqual(exit, { code: 0, signal: null }, last.output);
    assert.match(last.output, /pipeline: stopped/);
    t.diagnostic(`drained: ${acked(info)} acked; ${((performance.now() - started) / 1000).toFixed(1)} s so far`);
    // A policy set that failed to compile would leave its enterprise's events without a verdict.
    for (const output of logs) assert.doesNotMatch(output, /did not compile|stopped on an error/, output);

    const ch = await openClickHouse({ clickhouseUrl: null, dataDir });
    try {
      const count = await queryNumber(ch, 'SELECT count() FROM app_usage');
      const distinct = await queryNumber(ch, 'SELECT uniqExact(carrier, tower_id, event_id) FROM app_usage');
      const messages = await queryNumber(ch, 'SELECT uniqExact(stream_seq) FROM app_usage');
      const denied = await queryNumber(ch, "SELECT countIf(verdict = 'deny') FROM app_usage");
      const violations = await queryNumber(ch, 'SELECT count() FROM violations');
      const distinctAlerts = await queryNumber(ch, 'SELECT uniqExact(alert_id) FROM violations');
      const deadLetters = await queryNumber(ch, 'SELECT count() FROM dead_letters');
      const perMinute = await queryNumber(ch, projectionTotalQuery('app_usage', 'per_minute'));
      const violationsPerMinute = await queryNumber(ch, projectionTotalQuery('violations', 'per_minute'));
      const verdicts = await ch.client.query({
        query: 'SELECT verdict, count() FROM app_usage GROUP BY verdict ORDER BY verdict',
        format: 'JSONCompactEachRow',
      });
      t.diagnostic(`verdicts: ${(await verdicts.json<[string, string]>()).map(([v, n]) => `${v} ${n}`).join(', ')}`);
      t.diagnostic(
        `stored: ${count} rows, ${distinct} distinct events, ${messages} messages, ${violations} violations, ${deadLetters} dead letters, per-minute ${perMinute}/${violationsPerMinute}`,
      );
      assert.equal(distinct, published.events, 'every published event stored (no loss)');
      assert.equal(count, published.events, 'every event stored once (no duplicates)');
      assert.equal(messages, frames, 'every frame stored');
      assert.equal(denied, expectedViolations);
      assert.equal(violations, expectedViolations);
      assert.equal(distinctAlerts, expectedViolations, 'no violation stored twice');
      assert.equal(deadLetters, 0);
      // The rollups are projections, in the same parts as the rows: exact whatever was killed when.
      assert.equal(perMinute, published.events, 'the per-minute usage rollup sums to the events stored');
      assert.equal(violationsPerMinute, expectedViolations, 'the per-minute violations rollup sums to the violations stored');
    } finally {
      await ch.close();
    }
  });

  test('Two pipeline processes on one consumer → every event stored once', { timeout: 120_000 }, async (t) => {
    const started = performance.now();
    // A fresh consumer over a fresh stretch of the stream: the last test's messages are gone.
    await jsm.consumers.delete(USAGE_STREAM, DEFAULT_CONSUMER).catch(() => undefined);
    await jsm.streams.purge(USAGE_STREAM);
    // One data dir each: the embedded engine belongs to one process (with a server they would share it).
    const dirs = [await tempDir('a'), await tempDir('b')] as const;
    const procs = dirs.map((dir, i) => pipelineProcess(`pipeline ${'AB'[i]}`, dir, ['--threads', '1']));
    await Promise.all(procs.map((p) => p.ready()));

    const published = await publish({ events: 40_000, seed: 92, firstEventId: 10_000_000, rate: 8_000 });
    const info = await waitDrained(jsm, procs, 60_000);
    const exits = await Promise.all(procs.map((p) => p.kill('SIGTERM')));
    for (const [i, exit] of exits.entries()) assert.deepEqual(exit, { code: 0, signal: null }, procs[i]?.output);
    for (const p of procs) assert.doesNotMatch(p.output, /did not compile|stopped on an error/, p.output);
    t.diagnostic(
      `published ${published.events} events in ${published.frames} frames; drained (redelivered ${info.num_redelivered}) in ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );

    const counts: number[] = [];
    const keysOfFirst = new Set<string>();
    let shared = 0;
    for (const [i, dataDir] of dirs.entries()) {
      // One embedded data dir per process at a time: each handle is closed before the next opens.
      const ch = await openClickHouse({ clickhouseUrl: null, dataDir });
      try {
        const count = await queryNumber(ch, 'SELECT count() FROM app_usage');
        const distinct = await queryNumber(ch, 'SELECT uniqExact(carrier, tower_id, event_id) FROM app_usage');
        assert.equal(distinct, count, `no duplicates within ${procs[i]?.name}`);
        assert.equal(
          await queryNumber(ch, projectionTotalQuery('app_usage', 'per_minute')),
          count,
          `the per-minute rollup of ${procs[i]?.name} sums to its rows`,
        );
        counts.push(count);
        const rs = await ch.client.query({ query: 'SELECT carrier, tower_id, event_id FROM app_usage', format: 'JSONCompactEachRow' });
        for (const [carrier, tower, eventId] of await rs.json<[string, string, string | number]>()) {
          const key = `${carrier}:${tower}:${eventId}`;
          if (i === 0) keysOfFirst.add(key);
          else if (keysOfFirst.has(key)) shared++;
        }
      } finally {
        await ch.close();
      }
    }
    t.diagnostic(`stored A ${counts[0]}, B ${counts[1]}, in both ${shared}`);
    assert.equal(shared, 0, 'no event stored by both processes');
    assert.ok(
      counts.every((c) => c > 0),
      `both processes stored a share: ${counts.join(', ')}`,
    );
    assert.equal(
      counts.reduce((a, b) => a + b, 0),
      published.events,
    );
  });
});

/**
 * The pipeline end to end in this process: real nats-server, real chdb, worker threads.
 * Each test publishes its own events (distinct towers' event-id ranges) and waits on
 * ClickHouse for them.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { jetstreamManager, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { Unpackr } from 'msgpackr';
import type { ClickHouseHandle } from '../core/clickhouse/index.js';
import { type ControlPlaneStore, ControlPlaneView } from '../core/controlPlane/index.js';
import type { UsageEvent } from '../core/domain.js';
import { alertsSubject, decodeAlerts, type Alert } from '../core/live.js';
import { usageSubject, USAGE_DLQ_STREAM } from '../core/nats/index.js';
import { projectionTotalQuery } from '../core/testing/rollups.js';
import { openTempClickHouse } from '../core/testing/clickhouseFixture.js';
import { connectControlPlane } from '../core/testing/controlPlaneFixture.js';
import { withNats } from '../core/testing/natsFixture.js';
import { until } from '../core/testing/until.js';
import { encodeUsageFrame } from '../core/wire.js';
import { briefEvent, publishFrame } from '../fixtures/briefEvents.js';
import { seedWorld } from '../fixtures/seed.js';
import { createTrafficGenerator } from '../fixtures/traffic.js';
import { BRIEF, generateWorld } from '../fixtures/world.js';
import { worldDirectory, worldPolicyInputs } from '../fixtures/worldPolicies.js';
import { enrichEvent, evaluateReference, normalizePolicies } from '../rules-wasm/index.js';
import type { Pipeline } from './pipeline.js';
import { consumerSettled, startTestPipeline } from './testing/pipelineFixture.js';

const nats = await withNats();
// Test hooks of pipeline/worker.ts: a message on the first subject makes the worker throw, one
// on the second ends the worker thread. Read by the workers when they start. The thrown message
// names the subject, so "timeout" in it checks that a worker's failure is never taken for a
// broker outage (which would hand the message back for ever instead of dead-lettering it).
const POISON_SUBJECT = 'usage.att.timeout-tower';
const CRASH_SUBJECT = 'usage.att.crash-tower';
process.env['TOWERWATCH_TEST_POISON_SUBJECT'] = POISON_SUBJECT;
process.env['TOWERWATCH_TEST_CRASH_SUBJECT'] = CRASH_SUBJECT;
const MAX_DELIVER = 3;
const world = generateWorld({ seed: 21, enterprises: 3, usersPerEnterprise: 8, towers: 6 });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

describe('pipeline', () => {
  let nc: NatsConnection;
  let js: JetStreamClient;
  let store: ControlPlaneStore;
  let dataDir: string;
  let ch: ClickHouseHandle;
  let pipeline: Pipeline;
  let pipelineEnded = false;
  const logged: Array<{ line: string; level: string }> = [];

  before(async () => {
    ({ nc, js, store } = await connectControlPlane(nats, (s) => seedWorld(s, world)));
    ({ dataDir, ch } = await openTempClickHouse('tw-pipeline-', { retentionDays: 30 }));
    pipeline = await startTestPipeline(
      nats,
      nc,
      { dataDir, ch },
      { maxDeliver: MAX_DELIVER, retryDelayMs: 200, log: (line, level = 'info') => void logged.push({ line, level }) },
    );
    pipelineEnded = false;
    void pipeline.closed().finally(() => (pipelineEnded = true));
  });
  after(async () => {
    await pipeline?.close();
    await ch?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  const count = async (sql: string): Promise<number> => {
    const rs = await ch.client.query({ query: sql, format: 'JSONEachRow' });
    const rows = await rs.json<{ n: string | number }>();
    return Number(rows[0]?.n ?? 0);
  };
  const publish = (carrier: string, tower: string, events: UsageEvent[]): Promise<void> => publishFrame(js, carrier, tower, events);
  const event = (id: number, fields: Partial<UsageEvent>): UsageEvent => briefEvent(id, fields);

  it("stores a known set exactly, and alerts on John Doe's denied Slack upload", async () => {
    const alerts: Alert[] = [];
    const undecodable: string[] = [];
    const sub = nc.subscribe(alertsSubject('acme'), {
      callback: (_err, msg) => {
        const decoded = decodeAlerts(msg.data);
        if (decoded.ok) alerts.push(...decoded.value);
        else undecodable.push(decoded.reason);
      },
    });
    const generator = createTrafficGenerator(world, { seed: 4, violationRatio: 0.2, firstEventId: 1_000_000, now: () => Date.now() });
    const frames = generator.nextEvents(5000);
    const brief = [event(1, {}), event(2, { app: BRIEF.zoom, action: BRIEF.startMeeting }), event(3, { device: 'ffffffffffffffff' })];
    await publish('att', BRIEF.nycTower, brief);
    for (const f of frames) await publish(f.carrier, f.tower, f.events);
    const total = brief.length + frames.reduce((n, f) => n + f.events.length, 0);

    // Independent expectation: the reference evaluator over the same enrichment.
    const dir = worldDirectory(world);
    const sets = new Map(world.enterprises.map((e) => [e.id, normalizePolicies(worldPolicyInputs(world, e.id), { timezone: e.timezone })]));
    let expectedViolations = 0;
    let expectedAcme = 0;
    let expectedUnregistered = 0;
    for (const e of [...brief, ...frames.flatMap((f) => f.events)]) {
      const r = enrichEvent(dir, e);
      if (!r.enforced) expectedUnregistered++;
      if (r.enforced && evaluateReference(sets.get(r.enterpriseId) ?? assert.fail(), r.event).permission === 'deny') {
        expectedViolations++;
        if (r.enterpriseId === 'acme') expectedAcme++;
      }
    }

    await until(async () => (await count('SELECT count() AS n FROM app_usage')) >= total, 60_000);
    assert.equal(await count('SELECT count() AS n FROM app_usage'), total);
    assert.equal(await count('SELECT uniqExact(carrier, tower_id, event_id) AS n FROM app_usage'), total);
    assert.equal(await count('SELECT count() AS n FROM violations'), expectedViolations);
    assert.ok(expectedUnregistered > 0);
    assert.equal(await count("SELECT count() AS n FROM app_usage WHERE verdict = 'unregistered'"), expectedUnregistered);

    const rs = await ch.client.query({
      query:
        "SELECT event_id, enterprise_id, user_name, app_name, action_name, verdict, policy_name, severity, remediation FROM app_usage WHERE tower_id = 'tower123' AND carrier = 'att' AND event_id IN (1, 2, 3) ORDER BY event_id",
      format: 'JSONEachRow',
    });
    assert.deepEqual(await rs.json(), [
      {
        event_id: 1,
        enterprise_id: 'acme',
        user_name: 'John Doe',
        app_name: 'Slack',
        action_name: 'Upload File',
        verdict: 'deny',
        policy_name: 'Admin Policy',
        severity: 'high',
        remediation: 'block_device',
      },
      {
        event_id: 2,
        enterprise_id: 'acme',
        user_name: 'John Doe',
        app_name: 'Zoom',
        action_name: 'Start Meeting',
        verdict: 'allow',
        policy_name: 'Admin Policy',
        severity: '',
        remediation: '',
      },
      {
        event_id: 3,
        enterprise_id: '',
        user_name: '',
        app_name: 'Slack',
        action_name: 'Upload File',
        verdict: 'unregistered',
        policy_name: '',
        severity: '',
        remediation: '',
      },
    ]);

    await until(() => alerts.length >= expectedAcme, 10_000);
    sub.unsubscribe();
    assert.deepEqual(undecodable, []);
    assert.equal(alerts.length, expectedAcme);
    const john = alerts.find((a) => a['alert_id'] === 'att:tower123:1') ?? assert.fail('no alert for John');
    assert.equal(john['user_name'], 'John Doe');
    assert.equal(john['tower_location'], 'New York City');
    assert.equal(john['policy_name'], 'Admin Policy');
    assert.equal(john['severity'], 'high');
    const sum = await count(projectionTotalQuery('app_usage', 'per_minute'));
    assert.equal(sum, total, 'the per-minute projection counts every event once');
  });

  it('sends malformed frames to the dead-letter stream with the reason, and stores the good events around them', async () => {
    const before = await count('SELECT count() AS n FROM app_usage');
    const generator = createTrafficGenerator(world, { seed: 8, firstEventId: 5_000_000, now: () => Date.now() });
    const kinds = ['truncated', 'garbage', 'unknown_version', 'bad_events'] as const;
    let good = 0;
    for (const kind of kinds) {
      const f = generator.nextEvents(300)[0] ?? assert.fail();
      await publish(f.carrier, f.tower, f.events);
      good += f.events.length;
      const bad = generator.badFrame(kind);
      await js.publish(usageSubject(bad.carrier, bad.tower), bad.bytes);
      good += kind === 'bad_events' ? countGoodRows(bad) : 0;
    }
    await until(async () => (await count('SELECT count() AS n FROM dead_letters')) >= kinds.length, 30_000);
    await until(async () => (await count('SELECT count() AS n FROM app_usage')) >= before + good, 30_000);
    assert.equal(await count('SELECT count() AS n FROM app_usage'), before + good);
    const rs = await ch.client.query({ query: 'SELECT DISTINCT code FROM dead_letters ORDER BY code', format: 'JSONEachRow' });
    const codes = (await rs.json<{ code: string }>()).map((r) => r.code);
    assert.ok(codes.includes('not_msgpack') || codes.includes('unknown_version'), codes.join());
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info(USAGE_DLQ_STREAM);
    assert.equal(info.state.messages, kinds.length);
    const first = await jsm.streams.getMessage(USAGE_DLQ_STREAM, { seq: info.state.first_seq });
    assert.ok(first?.header.get('Towerwatch-Reason'), 'the dead letter says why');
    assert.match(first?.header.get('Towerwatch-Rejections') ?? '', /"code"/);
    assert.equal(pipeline.counters.deadLetterMessages >= kinds.length, true);
  });

  const settled = (): Promise<void> => consumerSettled(nc);

  it('a message the worker throws on, and one it dies on, end in the DLQ and dead_letters (processing_failed) and are acked; good messages around them are stored once', async () => {
    const beforeLost = pipeline.counters.workersLost;
    const good1 = [event(20_001, {}), event(20_002, {})];
    const good2 = [event(20_003, {}), event(20_004, {})];
    const poison = encodeUsageFrame('att', 'timeout-tower', [event(1, { tower: 'timeout-tower' })]);
    const crash = encodeUsageFrame('att', 'crash-tower', [event(1, { tower: 'crash-tower' })]);
    // Published together so that they tend to share a batch.
    const acks = await Promise.all([
      js.publish(usageSubject('att', BRIEF.nycTower), encodeUsageFrame('att', BRIEF.nycTower, good1)),
      js.publish(POISON_SUBJECT, poison),
      js.publish(CRASH_SUBJECT, crash),
      js.publish(usageSubject('att', BRIEF.nycTower), encodeUsageFrame('att', BRIEF.nycTower, good2)),
    ]);
    const [poisonSeq, crashSeq] = [acks[1].seq, acks[2].seq];
    await until(
      async () => (await count(`SELECT count() AS n FROM dead_letters WHERE stream_seq IN (${poisonSeq}, ${crashSeq})`)) >= 2,
      60_000,
      'both dead-lettered',
    );
    await settled();
    const rs = await ch.client.query({
      query: `SELECT stream_seq, code, message, event_index, payload_bytes FROM dead_letters WHERE stream_seq IN (${poisonSeq}, ${crashSeq}) ORDER BY stream_seq`,
      format: 'JSONEachRow',
    });
    const dead = await rs.json<{ stream_seq: number; code: string; message: string; event_index: number; payload_bytes: number }>();
    assert.deepEqual(
      dead.map((d) => [Number(d.stream_seq), d.code, d.event_index, d.payload_bytes]),
      [
        [poisonSeq, 'processing_failed', -1, poison.length],
        [crashSeq, 'processing_failed', -1, crash.length],
      ],
    );
    assert.match(dead[0]!.message, /^processing_failed: test poison message on usage\.att\.timeout-tower \(delivery \d+ of 3\)$/);
    assert.match(dead[1]!.message, /^processing_failed: .*worker exited/);
    assert.equal(await count("SELECT count() AS n FROM app_usage WHERE tower_id = 'tower123' AND event_id BETWEEN 20001 AND 20004"), 4);
    assert.equal(await count("SELECT count() AS n FROM app_usage WHERE tower_id IN ('timeout-tower', 'crash-tower')"), 0);
    const jsm = await jetstreamManager(nc);
    for (const seq of [poisonSeq, crashSeq]) {
      const dlq = await jsm.streams.getMessage(USAGE_DLQ_STREAM, { last_by_subj: `dlq.${seq === poisonSeq ? POISON_SUBJECT : CRASH_SUBJECT}` });
      assert.equal(dlq?.header.get('Towerwatch-Reason'), 'processing_failed');
      assert.equal(dlq?.header.get('Towerwatch-Stream-Seq'), String(seq));
    }
    assert.ok(pipeline.counters.workersLost > beforeLost, 'the dead worker was counted (and replaced)');
    assert.equal(pipeline.counters.failedMessages, 2);
    assert.equal(pipelineEnded, false, 'the pipeline keeps running');
    // And it still stores what comes next.
    await publish('att', BRIEF.nycTower, [event(20_005, {})]);
    await until(
      async () => (await count("SELECT count() AS n FROM app_usage WHERE tower_id = 'tower123' AND event_id = 20005")) === 1,
      30_000,
      'later traffic stored',
    );
  });

  it('a frame of 10,000 rows with bytes_up = -1 is one dead letter (payload once, 100 reasons, total 10,000) in bounded memory', async () => {
    const rows = Array.from({ length: 10_000 }, (_, i) => event(30_000 + i, { bytes_up: -1 }));
    const frame = encodeUsageFrame('att', BRIEF.nycTower, rows);
    let peak = process.memoryUsage().rss;
    const base = peak;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
    try {
      const seq = (await js.publish(usageSubject('att', BRIEF.nycTower), frame)).seq;
      await until(async () => (await count(`SELECT count() AS n FROM dead_letters WHERE stream_seq = ${seq}`)) >= 1, 60_000, 'dead-lettered');
      await settled();
      const rs = await ch.client.query({
        query: `SELECT count() AS n, any(code) AS code, any(rejected_count) AS total, any(JSONLength(rejections)) AS kept, any(payload_bytes) AS bytes, any(length(payload_base64)) AS b64 FROM dead_letters WHERE stream_seq = ${seq}`,
        format: 'JSONEachRow',
      });
      const [row] = await rs.json<Record<string, string | number>>();
      assert.deepEqual(
        { n: Number(row!['n']), code: row!['code'], total: Number(row!['total']), kept: Number(row!['kept']), bytes: Number(row!['bytes']) },
        { n: 1, code: 'bad_field', total: 10_000, kept: 100, bytes: frame.length },
      );
      assert.equal(Number(row!['b64']), Buffer.from(frame).toString('base64').length);
      const jsm = await jetstreamManager(nc);
      const info = await jsm.streams.info(USAGE_DLQ_STREAM);
      const dlq = await jsm.streams.getMessage(USAGE_DLQ_STREAM, { seq: info.state.last_seq });
      assert.equal(dlq?.header.get('Towerwatch-Stream-Seq'), String(seq));
      assert.equal(dlq?.header.get('Towerwatch-Rejected-Count'), '10000');
      assert.equal(dlq?.header.get('Towerwatch-Reason-Counts'), '{"bad_field":10000}');
      const headerBytes = [...(dlq?.header.keys() ?? [])].reduce((n, k) => n + k.length + (dlq?.header.get(k).length ?? 0), 0);
      assert.ok(headerBytes < 4096, `headers are small: ${headerBytes} bytes`);
      assert.equal(await count(`SELECT count() AS n FROM app_usage WHERE stream_seq = ${seq}`), 0);
    } finally {
      clearInterval(sampler);
    }
    const growthMb = (peak - base) / 2 ** 20;
    assert.ok(growthMb < 300, `RSS grew ${growthMb.toFixed(0)} MB`);
    assert.equal(pipelineEnded, false);
  });

  it('applies a policy change while traffic flows, without a restart', async () => {
    const view = await ControlPlaneView.open(nc);
    try {
      const rule =
        view.rulesOfPolicy(BRIEF.adminPolicy, 'acme').find((r) => r.app_id === BRIEF.slack && r.permission === 'deny') ?? assert.fail('no Slack rule');
      let id = 9_000_000;
      const ours = "carrier = 'att' AND tower_id = 'tower123' AND event_id BETWEEN 9000000 AND 9999999";
      const flowing = setInterval(() => void publish('att', BRIEF.nycTower, [event(id++, {})]), 20);
      try {
        await until(async () => (await count(`SELECT count() AS n FROM app_usage WHERE ${ours}`)) > 5, 60_000, 'traffic stored');
        const oldVersion = pipeline.counters.policyVersions['acme'] ?? assert.fail('no acme version yet');
        const entry = await store.get('policy_rule', 'acme', rule.id);
        await store.update('policy_rule', { ...rule, permission: 'allow', severity: undefined, remediation: undefined }, entry?.revision ?? assert.fail());
        await until(() => pipeline.counters.policyVersions['acme'] !== oldVersion, 30_000, 'new policy version in use');
        // Both workers swap within about a second of the change; give them 2 s of traffic.
        const settledFrom = id + 100;
        await until(
          async () => (await count(`SELECT count() AS n FROM app_usage WHERE ${ours} AND event_id >= ${settledFrom}`)) >= 10,
          30_000,
          'traffic after the change stored',
        );
        const newVersion = pipeline.counters.policyVersions['acme'] ?? '';
        assert.notEqual(newVersion, oldVersion);
        // Every verdict matches the version that decided it; events well after the switch get the new one.
        assert.equal(await count(`SELECT count() AS n FROM app_usage WHERE ${ours} AND policy_version = '${oldVersion}' AND verdict != 'deny'`), 0);
        assert.equal(await count(`SELECT count() AS n FROM app_usage WHERE ${ours} AND policy_version = '${newVersion}' AND verdict != 'allow'`), 0);
        const late = await ch.client.query({
          query: `SELECT event_id, verdict, policy_version FROM app_usage WHERE ${ours} AND event_id >= ${settledFrom} AND verdict != 'allow'`,
          format: 'JSONEachRow',
        });
        assert.deepEqual(await late.json(), [], `events from ${settledFrom} on (${id - settledFrom} of them) should all be allowed`);
      } finally {
        clearInterval(flowing);
      }
    } finally {
      await view.close();
    }
  });

  it("a policy that does not compile is reported in the process's log as an error, and the previous version stays in force", async () => {
    const view = await ControlPlaneView.open(nc);
    try {
      const rule = view.rulesOfPolicy(BRIEF.adminPolicy, 'acme')[0] ?? assert.fail('no acme rule');
      const version = pipeline.counters.policyVersions['acme'] ?? assert.fail('no acme version yet');
      const entry = await store.get('policy_rule', 'acme', rule.id);
      // Past the api's checks (written to the store directly): a time window that is no time.
      await store.update('policy_rule', { ...rule, when: { time: { from: '25:99', to: 'never' } } }, entry?.revision ?? assert.fail());
      let id = 10_000_000;
      const flowing = setInterval(() => void publish('att', BRIEF.nycTower, [event(id++, {})]), 50);
      try {
        await until(
          () => logged.some((l) => l.level === 'error' && /^pipeline: policies of acme did not compile; the previous version stays in force: /.test(l.line)),
          30_000,
          'the failure logged',
        );
      } finally {
        clearInterval(flowing);
      }
      assert.equal(pipeline.counters.policyVersions['acme'], version);
      assert.equal(pipelineEnded, false);
    } finally {
      await view.close();
    }
  });
});

function countGoodRows(bad: { bytes: Uint8Array; rejectedIndexes: number[] }): number {
  const frame = unpackr.unpack(bad.bytes) as { events: unknown[] };
  return frame.events.length - bad.rejectedIndexes.length;
}

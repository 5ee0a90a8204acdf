/**
 * The discovery worker against real components: nats-server (DISCOVERY, DISCOVERY_DLQ, the
 * control-plane KV bucket), embedded ClickHouse, the seeded control plane.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { jetstreamManager, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { ClickHouseHandle } from '../core/clickhouse/index.js';
import { CONTROL_BUCKET, type ControlPlaneStore, ControlPlaneView } from '../core/controlPlane/index.js';
import type { DiscoveryReport } from '../core/domain.js';
import { ALL_ENTERPRISE_EVENTS_SUBJECT, enterpriseEventsSubject } from '../core/live.js';
import { DISCOVERY_DLQ_STREAM, discoverySubject } from '../core/nats/index.js';
import { openTempClickHouse } from '../core/testing/clickhouseFixture.js';
import { connectControlPlane } from '../core/testing/controlPlaneFixture.js';
import { withNats } from '../core/testing/natsFixture.js';
import { until } from '../core/testing/until.js';
import { discoveryMsgId, encodeDiscoveryFrame } from '../core/wire.js';
import { seedWorld } from '../fixtures/seed.js';
import { BRIEF, generateWorld } from '../fixtures/world.js';
import { ClickHouseSink } from './clickhouseSink.js';
import { DiscoveryWorker } from './discovery.js';

const nats = await withNats();
const world = generateWorld({ seed: 21, enterprises: 3, usersPerEnterprise: 8, towers: 6 });

describe('discovery worker', () => {
  let nc: NatsConnection;
  let js: JetStreamClient;
  let view: ControlPlaneView;
  let store: ControlPlaneStore;
  let dataDir: string;
  let ch: ClickHouseHandle;
  let sink: ClickHouseSink;
  let worker: DiscoveryWorker;
  const events: Array<{ subject: string; body: Record<string, any> }> = [];

  before(async () => {
    ({ nc, js, store } = await connectControlPlane(nats, (s) => seedWorld(s, world)));
    // An enterprise whose SIMs are on AT&T only: another carrier cannot claim devices for it.
    await store.create('enterprise', { id: 'attonly', name: 'AT&T Only Inc', plan_id: world.enterprises[0]!.plan_id, timezone: 'UTC', carrier_ids: ['att'] });
    view = await ControlPlaneView.open(nc);
    await until(() => view.enterprise('attonly') !== undefined, 5000, 'the view has the new enterprise');
    ({ dataDir, ch } = await openTempClickHouse('tw-discovery-', { retentionDays: 30 }));
    sink = new ClickHouseSink(ch);
    nc.subscribe(ALL_ENTERPRISE_EVENTS_SUBJECT, { callback: (_e, m) => void events.push({ subject: m.subject, body: m.json() }) });
    worker = await DiscoveryWorker.start({ nc, sink, view, store, log: () => undefined, lingerMs: 100 });
  });
  after(async () => {
    await worker?.close();
    await view?.close();
    await sink?.close();
    await ch?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  const t0 = Date.parse('2026-12-01T12:00:00Z');
  const report = (device: string, fields: Partial<DiscoveryReport> = {}): DiscoveryReport => ({
    ts: t0,
    carrier: 'att',
    tower: BRIEF.nycTower,
    device,
    model: 'Google Pixel 8',
    os: 'Android',
    os_version: '14',
    first_seen: true,
    enterprise: BRIEF.acme,
    ...fields,
  });
  const publish = async (reports: DiscoveryReport[]): Promise<number> => {
    const { carrier, tower } = reports[0]!;
    const bytes = encodeDiscoveryFrame(carrier, tower, reports);
    return (await js.publish(discoverySubject(carrier, tower), bytes, { msgID: discoveryMsgId(carrier, tower, bytes) })).seq;
  };
  const rows = async <T>(query: string, params: Record<string, unknown> = {}): Promise<T[]> =>
    (await ch.client.query({ query, query_params: params, format: 'JSONEachRow' })).json<T>();
  const sightings = (device: string) =>
    rows<{ enterprise_id: string; tower_id: string; outcome: string; os_version: string; reported_enterprise: string }>(
      `SELECT enterprise_id, tower_id, outcome, os_version, reported_enterprise FROM ${ch.database}.discovery_sightings WHERE device_id = {d:String} ORDER BY ts, report_index`,
      { d: device },
    );
  /** Messages in the control-plane bucket's stream: one per registry write. */
  const kvWrites = async (): Promise<number> => (await (await jetstreamManager(nc)).streams.info(`KV_${CONTROL_BUCKET}`)).state.last_seq;
  const processed = async (seq: number): Promise<void> =>
    until(
      async () => (await (await jetstreamManager(nc)).consumers.info('DISCOVERY', 'discovery')).ack_floor.stream_seq >= seq,
      10_000,
      `message ${seq} acked`,
    );

  it('a new device of a known enterprise becomes discovered, once, and its dashboards hear of it', async () => {
    // Reported three times in one frame: one registry entry, three sightings.
    const seq = await publish([
      report('new-acme-1'),
      report('new-acme-1', { ts: t0 + 1000, first_seen: false }),
      report('new-acme-1', { ts: t0 + 2000, tower: BRIEF.nycTower, first_seen: false }),
    ]);
    await processed(seq);
    await until(() => view.device('new-acme-1') !== undefined, 5000, 'the device in the view');
    const d = view.device('new-acme-1')!;
    assert.deepEqual(
      { ...d },
      {
        id: 'new-acme-1',
        enterprise_id: BRIEF.acme,
        user_id: null,
        model: 'Google Pixel 8',
        os: 'Android',
        os_version: '14',
        status: 'discovered',
        registered_at: null,
        first_seen: new Date(t0).toISOString(),
        last_seen: new Date(t0 + 2000).toISOString(),
        first_tower_id: BRIEF.nycTower,
        last_tower_id: BRIEF.nycTower,
        carrier_id: 'att',
      },
    );
    assert.equal(view.get('device', BRIEF.acme, 'new-acme-1')!.revision > 0, true);
    assert.deepEqual(
      (await sightings('new-acme-1')).map((s) => [s.enterprise_id, s.outcome]),
      [
        [BRIEF.acme, 'discovered'],
        [BRIEF.acme, 'sighted'],
        [BRIEF.acme, 'sighted'],
      ],
    );
    await until(() => events.some((e) => e.body['type'] === 'device.discovered' && e.body['device']?.id === 'new-acme-1'), 5000, 'device.discovered');
    const announced = events.filter((e) => e.body['type'] === 'device.discovered' && e.body['device']?.id === 'new-acme-1');
    assert.equal(announced.length, 1);
    assert.equal(announced[0]!.subject, enterpriseEventsSubject(BRIEF.acme));
    assert.equal(announced[0]!.body['device'].first_tower_location, 'New York City');
  });

  it('re-sightings of known devices are ClickHouse rows only: no registry write', async () => {
    await until(() => view.device('new-acme-1') !== undefined, 5000, 'the device of the first test');
    const before = await kvWrites();
    const reports = Array.from({ length: 200 }, (_, i) =>
      report(i % 2 === 0 ? 'new-acme-1' : BRIEF.johnDevice, {
        ts: t0 + 10_000 + i,
        first_seen: false,
        model: i % 2 === 0 ? 'Google Pixel 8' : view.device(BRIEF.johnDevice)!.model,
        os: i % 2 === 0 ? 'Android' : view.device(BRIEF.johnDevice)!.os,
        os_version: i % 2 === 0 ? '14' : view.device(BRIEF.johnDevice)!.os_version,
      }),
    );
    const seq = await publish(reports);
    await processed(seq);
    assert.equal(await kvWrites(), before, 'no KV write for 200 sightings of unchanged devices');
    const john = await sightings(BRIEF.johnDevice);
    assert.equal(john.length, 100);
    assert.ok(john.every((s) => s.enterprise_id === BRIEF.acme && s.outcome === 'sighted'));
  });

  it('a new OS version is written to the registry', async () => {
    const seq = await publish([report('new-acme-1', { ts: t0 + 60_000, os_version: '15', tower: BRIEF.nycTower, carrier: 'verizon', first_seen: false })]);
    await processed(seq);
    await until(() => view.device('new-acme-1')?.os_version === '15', 5000, 'os_version 15 in the view');
    const d = view.device('new-acme-1')!;
    assert.equal(d.status, 'discovered');
    assert.equal(d.first_seen, new Date(t0).toISOString());
    assert.equal(d.last_seen, new Date(t0 + 60_000).toISOString());
    assert.equal(d.carrier_id, 'verizon');
    assert.equal((await sightings('new-acme-1')).at(-1)?.outcome, 'updated');
  });

  it('no enterprise, an unknown one, or one the carrier does not serve: a sighting, no device', async () => {
    const seq = await publish([
      report('consumer-1', { enterprise: undefined }),
      report('unknown-ent-1', { enterprise: 'nosuchcorp' }),
      report('right-carrier-1', { enterprise: 'attonly' }),
    ]);
    const wrong = await publish([report('wrong-carrier-1', { enterprise: 'attonly', carrier: 'tmobile', tower: BRIEF.sfTower })]);
    await processed(Math.max(seq, wrong));
    await until(() => view.device('right-carrier-1') !== undefined, 5000, 'the device its own carrier reported');
    for (const id of ['consumer-1', 'unknown-ent-1', 'wrong-carrier-1']) {
      assert.equal(view.device(id), undefined, id);
      const [s] = await sightings(id);
      assert.equal(s?.outcome, 'unclaimed', id);
      assert.equal(s?.enterprise_id, '', `${id} is stored under no enterprise`);
    }
    assert.equal((await sightings('wrong-carrier-1'))[0]?.reported_enterprise, 'attonly');
    assert.ok(!events.some((e) => e.subject === enterpriseEventsSubject('nosuchcorp')));
  });

  it("a device of one enterprise reported as another's stays its owner's", async () => {
    const seq = await publish([
      report(BRIEF.johnDevice, {
        enterprise: BRIEF.globex,
        ts: t0 + 90_000,
        model: view.device(BRIEF.johnDevice)!.model,
        os: view.device(BRIEF.johnDevice)!.os,
        os_version: view.device(BRIEF.johnDevice)!.os_version,
        first_seen: false,
      }),
    ]);
    await processed(seq);
    const last = (await sightings(BRIEF.johnDevice)).at(-1)!;
    assert.deepEqual([last.enterprise_id, last.reported_enterprise, last.outcome], [BRIEF.acme, BRIEF.globex, 'sighted']);
    assert.equal(view.device(BRIEF.johnDevice)!.enterprise_id, BRIEF.acme);
  });

  it('undecodable messages and bad reports go to DISCOVERY_DLQ and dead_letters with the reason; good reports of the frame are kept', async () => {
    const garbage = (await js.publish(discoverySubject('att', BRIEF.nycTower), new Uint8Array([0xc1, 1, 2, 3]))).seq;
    // One good report and one whose enterprise is not an id.
    const bytes = encodeDiscoveryFrame('att', BRIEF.nycTower, [report('mixed-good-1'), report('mixed-bad-1', { enterprise: 'Acme Corp' })]);
    const mixed = (await js.publish(discoverySubject('att', BRIEF.nycTower), bytes)).seq;
    await processed(mixed);
    const dead = await rows<{ stream_seq: string; code: string; event_index: number; stream: string }>(
      `SELECT stream_seq, code, event_index, stream FROM ${ch.database}.dead_letters WHERE stream = 'DISCOVERY' ORDER BY stream_seq, event_index`,
    );
    assert.deepEqual(
      dead.map((d) => [Number(d.stream_seq), d.code, d.event_index]),
      [
        [garbage, 'not_msgpack', -1],
        [mixed, 'bad_field', 1],
      ],
    );
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info(DISCOVERY_DLQ_STREAM);
    assert.equal(info.state.messages, 2);
    const first = await jsm.streams.getMessage(DISCOVERY_DLQ_STREAM, { seq: info.state.first_seq });
    assert.equal(first?.subject, `dlq.discovery.att.${BRIEF.nycTower}`);
    assert.equal(first?.header.get('Towerwatch-Reason'), 'not_msgpack');
    assert.deepEqual([...(first?.data ?? [])], [0xc1, 1, 2, 3], 'the payload as it came');
    await until(() => view.device('mixed-good-1') !== undefined, 5000, 'the good report of the mixed frame');
  });

  it("the subject is the truth: a report claiming Verizon on AT&T's subject (or on a malformed subject) creates nothing and is a subject_mismatch (bad_subject) dead letter", async () => {
    const forged = encodeDiscoveryFrame('verizon', BRIEF.nycTower, [report('forged-1', { carrier: 'verizon' })]);
    const seq = (await js.publish(discoverySubject('att', BRIEF.nycTower), forged)).seq;
    const bytes = encodeDiscoveryFrame('att', BRIEF.nycTower, [report('forged-2')]);
    const extra = (await js.publish(`discovery.att.${BRIEF.nycTower}.extra`, bytes)).seq;
    const good = await publish([report('honest-1')]);
    await processed(good);
    const dead = await rows<{ stream_seq: string; code: string; event_index: number; rejected_count: number }>(
      `SELECT stream_seq, code, event_index, rejected_count FROM ${ch.database}.dead_letters WHERE stream = 'DISCOVERY' AND stream_seq IN (${seq}, ${extra}) ORDER BY stream_seq`,
    );
    assert.deepEqual(
      dead.map((d) => [Number(d.stream_seq), d.code, d.event_index, d.rejected_count]),
      [
        [seq, 'subject_mismatch', -1, 1],
        [extra, 'bad_subject', -1, 1],
      ],
    );
    await until(() => view.device('honest-1') !== undefined, 5000, 'the honest report');
    assert.equal(view.device('forged-1'), undefined);
    assert.equal(view.device('forged-2'), undefined);
    assert.deepEqual(await sightings('forged-1'), []);
  });

  it('a second pass over the stream (redelivery) writes no row or device twice', async () => {
    const countRows = async () => Number((await rows<{ n: string }>(`SELECT count() AS n FROM ${ch.database}.discovery_sightings`))[0]!.n);
    const countDead = async () => Number((await rows<{ n: string }>(`SELECT count() AS n FROM ${ch.database}.dead_letters`))[0]!.n);
    const [sightingsBefore, deadBefore, kvBefore] = [await countRows(), await countDead(), await kvWrites()];
    const announcedBefore = events.filter((e) => e.body['type'] === 'device.discovered').length;
    const jsm = await jetstreamManager(nc);
    const last = (await jsm.streams.info('DISCOVERY')).state.last_seq;
    // A fresh consumer delivers every message again, as a redelivery after a crash would.
    const replay = await DiscoveryWorker.start({ nc, sink, view, store, log: () => undefined, lingerMs: 100, consumer: 'discovery-replay' });
    try {
      await until(async () => (await jsm.consumers.info('DISCOVERY', 'discovery-replay')).ack_floor.stream_seq >= last, 10_000, 'replay acked');
      assert.equal(replay.counters.redeliveredSkipped, last);
      assert.equal(replay.counters.sightings, 0);
    } finally {
      await replay.close();
    }
    assert.equal(await countRows(), sightingsBefore);
    assert.equal(await countDead(), deadBefore);
    assert.equal(await kvWrites(), kvBefore);
    assert.equal(events.filter((e) => e.body['type'] === 'device.discovered').length, announcedBefore);
  });
});

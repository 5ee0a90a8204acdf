/**
 * The remediation worker against real components: nats-server (REMEDIATION work queue,
 * request/reply to the simulated towers), embedded ClickHouse, the seeded control plane.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import type { JetStreamClient } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { Packr } from 'msgpackr';
import type { ClickHouseHandle } from '../core/clickhouse/index.js';
import { type ControlPlaneStore, ControlPlaneView } from '../core/controlPlane/index.js';
import { ALL_ENTERPRISE_EVENTS_SUBJECT } from '../core/live.js';
import { remedialActionId, type RemediationRequest } from '../core/remediation.js';
import { type Block, BLOCKS_BUCKET, blockKey, blockStatus, unblockRequestOf, WIDE_SCOPE_SUBJECT } from '../core/blocks.js';
import { remediationSubject } from '../core/nats/index.js';
import { openTempClickHouse } from '../core/testing/clickhouseFixture.js';
import { connectControlPlane } from '../core/testing/controlPlaneFixture.js';
import { withNats } from '../core/testing/natsFixture.js';
import { until } from '../core/testing/until.js';
import { seedWorld } from '../fixtures/seed.js';
import { TowerAgent } from '../fixtures/towerAgent.js';
import { BRIEF, generateWorld } from '../fixtures/world.js';
import { ClickHouseSink } from './clickhouseSink.js';
import { Remediator } from './remediator.js';

const nats = await withNats();
const world = generateWorld({ seed: 21, enterprises: 3, usersPerEnterprise: 8, towers: 6 });
const packr = new Packr({ useRecords: false });

describe('remediator', () => {
  let nc: NatsConnection;
  let js: JetStreamClient;
  let store: ControlPlaneStore;
  let view: ControlPlaneView;
  let dataDir: string;
  let ch: ClickHouseHandle;
  let sink: ClickHouseSink;
  let towers: TowerAgent;
  let remediator: Remediator;
  const events: Array<Record<string, unknown>> = [];
  const logs: string[] = [];

  before(async () => {
    ({ nc, js, store } = await connectControlPlane(nats, (s) => seedWorld(s, world)));
    view = await ControlPlaneView.open(nc);
    ({ dataDir, ch } = await openTempClickHouse('tw-remediator-', { retentionDays: 30 }));
    sink = new ClickHouseSink(ch);
    towers = TowerAgent.start({ nc, silentTowers: ['tower128'], ignoringTowers: ['tower-ignoring'] });
    nc.subscribe(ALL_ENTERPRISE_EVENTS_SUBJECT, { callback: (_e, m) => void events.push(m.json()) });
    remediator = await Remediator.start({
      nc,
      sink,
      clickhouse: ch,
      view,
      log: (line) => void logs.push(line),
      commandTimeoutMs: 300,
      backoffMs: 50,
      sweepEveryMs: 200,
      proofGraceMs: 300,
    });
  });
  after(async () => {
    await remediator?.close();
    towers?.close();
    await view?.close();
    await sink?.close();
    await ch?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  let n = 0;
  const request = (fields: Partial<RemediationRequest> = {}): RemediationRequest => ({
    type: 'remediation',
    trigger: 'auto',
    alert_id: `att:${BRIEF.nycTower}:${++n}`,
    enterprise_id: BRIEF.acme,
    device_id: BRIEF.johnDevice,
    tower_id: BRIEF.nycTower,
    carrier: 'att',
    app_id: BRIEF.slack,
    action: 'block_device',
    rule_id: 'r1',
    requested_at: Date.now(),
    ...fields,
  });
  const publish = async (r: RemediationRequest, msgID = `${r.alert_id}:${r.action}:${Math.random()}`): Promise<void> => {
    await js.publish(remediationSubject(r.enterprise_id, r.tower_id || WIDE_SCOPE_SUBJECT), packr.pack(r), { msgID });
  };
  const outcomes = async (alertId: string): Promise<Array<{ status: string; attempts: number; trigger: string }>> => {
    const rs = await ch.client.query({
      query: 'SELECT status, attempts, trigger FROM remedial_actions WHERE alert_id = {a:String}',
      query_params: { a: alertId },
      format: 'JSONEachRow',
    });
    return rs.json();
  };

  it('an automatic block on a plan with auto-remediation reaches the tower, is recorded as success and announced', async () => {
    const r = request();
    assert.equal(towers.allows({ tower: r.tower_id, device: r.device_id, app: r.app_id }), true);
    await publish(r);
    await until(async () => (await outcomes(r.alert_id)).length === 1, 15_000, 'the outcome row');
    assert.deepEqual(await outcomes(r.alert_id), [{ status: 'success', attempts: 1, trigger: 'auto' }]);
    assert.equal(towers.allows({ tower: r.tower_id, device: r.device_id, app: r.app_id }), false, 'the tower stopped carrying the device');
    await until(() => events.some((e) => e['alert_id'] === r.alert_id), 15_000, 'the remediation message');
    const e = events.find((x) => x['alert_id'] === r.alert_id)!;
    assert.deepEqual(
      [e['type'], e['action_name'], e['status'], e['action_id']],
      ['remediation', 'Block Device', 'success', remedialActionId(r.alert_id, 'block_device')],
    );
  });

  it('an automatic request for an enterprise without the plan is skipped; a manual one is executed', async () => {
    const globexDevice = world.devices.find((d) => d.enterprise_id === BRIEF.globex)!.id;
    const auto = request({ enterprise_id: BRIEF.globex, device_id: globexDevice });
    const before = towers.commands;
    await publish(auto);
    await until(async () => (await outcomes(auto.alert_id)).length === 1, 15_000, 'the skipped row');
    assert.deepEqual(await outcomes(auto.alert_id), [{ status: 'skipped_by_plan', attempts: 0, trigger: 'auto' }]);
    assert.equal(towers.commands, before, 'no command sent');
    const manual = request({ enterprise_id: BRIEF.globex, device_id: globexDevice, trigger: 'manual', requested_by: 'admin@globex', action: 'block_app' });
    await publish(manual);
    await until(async () => (await outcomes(manual.alert_id)).length === 1, 15_000, 'the manual row');
    assert.deepEqual(await outcomes(manual.alert_id), [{ status: 'success', attempts: 1, trigger: 'manual' }]);
    assert.equal(towers.allows({ tower: manual.tower_id, device: globexDevice, app: manual.app_id }), false, 'the app is blocked for that device');
  });

  it('a tower that never answers is recorded as timeout after the retries, without holding up others', async () => {
    const silent = request({ tower_id: 'tower128' });
    const normal = request({ device_id: 'device-other' });
    await publish(silent);
    await publish(normal);
    await until(async () => (await outcomes(normal.alert_id)).length === 1, 15_000, 'the normal one');
    assert.equal((await outcomes(silent.alert_id)).length, 0, 'the silent one is still retrying');
    await until(async () => (await outcomes(silent.alert_id)).length === 1, 15_000, 'the timeout row');
    assert.deepEqual(await outcomes(silent.alert_id), [{ status: 'timeout', attempts: 3, trigger: 'auto' }]);
  });

  it('a redelivered or repeated request is executed once', async () => {
    const r = request({ device_id: 'device-repeat' });
    const before = towers.commands;
    await publish(r, 'first');
    await until(async () => (await outcomes(r.alert_id)).length === 1, 15_000, 'the first outcome');
    await publish(r, 'second'); // past the stream's duplicate check: a different message id
    await until(() => remediator.counters.duplicates >= 1, 15_000, 'the repeat to be seen');
    assert.equal((await outcomes(r.alert_id)).length, 1);
    assert.equal(towers.commands, before + 1);
  });

  it('a device that keeps violating at a tower gets one block: 100 automatic requests, one tower command, 99 merged', async () => {
    const device = 'device-storm';
    const before = towers.commands;
    const storm = Array.from({ length: 100 }, () => request({ device_id: device }));
    await Promise.all(storm.map((r) => publish(r)));
    await until(
      async () => {
        const rs = await ch.client.query({
          query: "SELECT toString(count()) AS n FROM remedial_actions WHERE device_id = 'device-storm'",
          format: 'JSONEachRow',
        });
        return (await rs.json<{ n: string }>())[0]!.n === '100';
      },
      30_000,
      'all 100 outcomes',
    );
    const statuses = await ch.client.query({
      query: "SELECT status, toString(count()) AS n FROM remedial_actions WHERE device_id = 'device-storm' GROUP BY status ORDER BY status",
      format: 'JSONEachRow',
    });
    assert.deepEqual(await statuses.json(), [
      { status: 'merged', n: '99' },
      { status: 'success', n: '1' },
    ]);
    assert.equal(towers.commands, before + 1, 'one command reached the tower');
    const kv = await new Kvm(nc).open(BLOCKS_BUCKET);
    const block = (await kv.get(blockKey({ enterprise_id: BRIEF.acme, device_id: device, app_id: null, tower_id: BRIEF.nycTower })))!.json<Block>();
    assert.deepEqual([block.hits, block.created_by, block.scope, block.tower_id, block.app_id], [100, 'auto', 'tower', BRIEF.nycTower, null]);
    assert.ok(storm.some((r) => r.alert_id === block.first_alert_id) && storm.some((r) => r.alert_id === block.last_alert_id));

    // The device's block covers an app's: merged. Another tower is another scope: executed.
    const app = request({ device_id: device, action: 'block_app' });
    const elsewhere = request({ device_id: device, tower_id: BRIEF.sfTower });
    await publish(app);
    await publish(elsewhere);
    await until(async () => (await outcomes(app.alert_id)).length === 1 && (await outcomes(elsewhere.alert_id)).length === 1, 15_000, 'both outcomes');
    assert.equal((await outcomes(app.alert_id))[0]!.status, 'merged');
    assert.equal((await outcomes(elsewhere.alert_id))[0]!.status, 'success');
    assert.equal(towers.commands, before + 2);

    // An unblock removes the block: the next violation blocks again.
    const lift = request({ device_id: device, trigger: 'manual', requested_by: 'admin@acme', action: 'unblock_device' });
    await publish(lift);
    await until(async () => (await outcomes(lift.alert_id)).length === 1, 15_000, 'the unblock');
    assert.equal(
      await kv.get(blockKey({ enterprise_id: BRIEF.acme, device_id: device, app_id: null, tower_id: BRIEF.nycTower })).then((e) => e?.operation ?? null),
      'DEL',
    );
    const again = request({ device_id: device });
    await publish(again);
    await until(async () => (await outcomes(again.alert_id)).length === 1, 15_000, 'the new block');
    assert.equal((await outcomes(again.alert_id))[0]!.status, 'success');
  });

  /** Runs `fn` with Acme's plan lasting automatic blocks `seconds`, and puts the plan back after. */
  const withAcmeBlockTtl = async (seconds: number, fn: () => Promise<void>): Promise<void> => {
    const acmePlan = view.planOfEnterprise(BRIEF.acme)!;
    const entry = await store.get('plan', '_global', acmePlan.id);
    await store.update('plan', { ...acmePlan, block_ttl_seconds: seconds }, entry!.revision);
    await until(() => view.planOfEnterprise(BRIEF.acme)?.block_ttl_seconds === seconds, 5000, 'the plan');
    try {
      await fn();
    } finally {
      const now = await store.get('plan', '_global', acmePlan.id);
      await store.update('plan', acmePlan, now!.revision);
    }
  };

  it('entries of the blocks bucket that are not blocks are logged and skipped: the blocks after them still expire, and a block made at one replaces it', async () => {
    await withAcmeBlockTtl(1, async () => {
      const kv = await new Kvm(nc).open(BLOCKS_BUCKET);
      const key = (device: string): string => blockKey({ enterprise_id: BRIEF.acme, device_id: device, app_id: null, tower_id: BRIEF.nycTower });
      // Written by hand before the blocks below: a watch that stopped at them would never see those.
      await kv.put(key('device-garbled'), '{"not json');
      await kv.put(`${BRIEF.acme}.handwritten`, JSON.stringify({ block_id: 'bk_x', hits: 'many' }));
      const after = request({ device_id: 'device-after-garbage' });
      const over = request({ device_id: 'device-garbled' });
      await publish(after);
      await publish(over);
      await until(async () => (await outcomes(after.alert_id)).length === 1 && (await outcomes(over.alert_id)).length === 1, 15_000, 'both blocks');
      const made = (await kv.get(key('device-garbled')))!.json<Block>();
      assert.equal(made.device_id, 'device-garbled', 'the block replaced the entry that was not one');
      await until(async () => (await kv.get(key('device-after-garbage')))?.operation === 'DEL', 15_000, 'the block after the bad entries to expire');
      await until(async () => (await kv.get(key('device-garbled')))?.operation === 'DEL', 15_000, 'the block that replaced one to expire');
      assert.ok(
        logs.some((l) => l.includes(`blocks entry ${BRIEF.acme}.handwritten`) && l.includes('is not a block')),
        logs.join('\n'),
      );
      await kv.purge(`${BRIEF.acme}.handwritten`);
    });
  });

  it("an automatic block lasts the plan's block_ttl_seconds, then an automatic unblock lifts it; a block by hand stays", async () => {
    await withAcmeBlockTtl(1, async () => {
      const kv = await new Kvm(nc).open(BLOCKS_BUCKET);
      const auto = request({ device_id: 'device-expiring' });
      const manual = request({ device_id: 'device-kept', trigger: 'manual', requested_by: 'admin@acme' });
      await publish(auto);
      await publish(manual);
      await until(async () => (await outcomes(auto.alert_id)).length === 1 && (await outcomes(manual.alert_id)).length === 1, 15_000, 'both blocks');
      const key = (device: string): string => blockKey({ enterprise_id: BRIEF.acme, device_id: device, app_id: null, tower_id: BRIEF.nycTower });
      const made = (await kv.get(key('device-expiring')))!.json<Block>();
      assert.ok(made.expires_at !== null && made.expires_at - made.created_at === 1000, JSON.stringify(made));
      assert.equal((await kv.get(key('device-kept')))!.json<Block>().expires_at, null, 'a block by hand has no end');
      assert.equal(towers.allows({ tower: BRIEF.nycTower, device: 'device-expiring', app: 'x' }), false);
      await until(async () => (await kv.get(key('device-expiring')))?.operation === 'DEL', 15_000, 'the block to expire');
      assert.equal(towers.allows({ tower: BRIEF.nycTower, device: 'device-expiring', app: 'x' }), true, 'carried again');
      // The outcome row is written after the block is removed.
      const lifted = async (): Promise<unknown[]> =>
        (
          await ch.client.query({
            query: "SELECT action, status, trigger FROM remedial_actions WHERE device_id = 'device-expiring' AND action = 'unblock_device'",
            format: 'JSONEachRow',
          })
        ).json();
      await until(async () => (await lifted()).length > 0, 15_000, 'the unblock recorded');
      assert.deepEqual(await lifted(), [{ action: 'unblock_device', status: 'success', trigger: 'auto' }]);
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal((await kv.get(key('device-kept')))?.operation, 'PUT', 'still blocked');
    });
  });

  it('a block whose traffic goes on after its grace period (a tower that acks but ignores it) is marked ineffective and announced once; one that holds stays active', async () => {
    const kv = await new Kvm(nc).open(BLOCKS_BUCKET);
    const ignored = request({ device_id: 'device-ignored', tower_id: 'tower-ignoring', trigger: 'manual', requested_by: 'admin@acme' });
    const held = request({ device_id: 'device-held', trigger: 'manual', requested_by: 'admin@acme' });
    // The held block first, and the other well after it: each block counts from its own grace
    // period's end, not from the earliest one's.
    await publish(held);
    await until(async () => (await outcomes(held.alert_id)).length === 1, 15_000, 'the first block');
    await new Promise((r) => setTimeout(r, 600));
    await publish(ignored);
    await until(async () => (await outcomes(ignored.alert_id)).length === 1, 15_000, 'the second block');
    assert.deepEqual(await outcomes(ignored.alert_id), [{ status: 'success', attempts: 1, trigger: 'manual' }], 'the tower said it did');
    assert.equal(towers.allows({ tower: 'tower-ignoring', device: 'device-ignored', app: 'x' }), true, 'and carries on');
    const key = (device: string, tower: string): string => blockKey({ enterprise_id: BRIEF.acme, device_id: device, app_id: null, tower_id: tower });
    const block = async (device: string, tower: string): Promise<Block> => (await kv.get(key(device, tower)))!.json<Block>();
    const ignoredBlock = await block('device-ignored', 'tower-ignoring');
    const heldBlock = await block('device-held', BRIEF.nycTower);
    // Stored traffic: the ignored device after the grace period (5 events), and within it (1);
    // the held device before its block only; the ignored device at another tower (not this block's).
    let id = 9_000_000;
    const row = (device: string, tower: string, ts: number): string =>
      `('${BRIEF.acme}', fromUnixTimestamp64Milli(${ts}, 'UTC'), ${id++}, '${device}', '${tower}', 'slack')`;
    const rows = [
      ...Array.from({ length: 5 }, (_, i) => row('device-ignored', 'tower-ignoring', ignoredBlock.created_at + 400 + i)),
      row('device-ignored', 'tower-ignoring', ignoredBlock.created_at + 100),
      row('device-held', BRIEF.nycTower, heldBlock.created_at - 1_000),
      row('device-ignored', 'tower-elsewhere', ignoredBlock.created_at + 500),
    ];
    await ch.client.command({ query: `INSERT INTO app_usage (enterprise_id, ts, event_id, device_id, tower_id, app_id) VALUES ${rows.join(', ')}` });
    await until(async () => (await block('device-ignored', 'tower-ignoring')).events_since === 5, 15_000, 'the block found ineffective');
    const marked = await block('device-ignored', 'tower-ignoring');
    assert.equal(blockStatus(marked), 'ineffective');
    assert.equal(marked.last_seen_at, ignoredBlock.created_at + 404);
    await until(() => events.some((e) => e['type'] === 'block.ineffective'), 5_000, 'the announcement');
    // More of it: the count follows, announced once.
    await ch.client.command({
      query: `INSERT INTO app_usage (enterprise_id, ts, event_id, device_id, tower_id, app_id) VALUES ${row('device-ignored', 'tower-ignoring', ignoredBlock.created_at + 900)}`,
    });
    await until(async () => (await block('device-ignored', 'tower-ignoring')).events_since === 6, 15_000, 'the count updated');
    await new Promise((r) => setTimeout(r, 500));
    const announced = events.filter((e) => e['type'] === 'block.ineffective');
    assert.deepEqual(announced, [
      {
        type: 'block.ineffective',
        block_id: ignoredBlock.block_id,
        device_id: 'device-ignored',
        app_id: null,
        tower_id: 'tower-ignoring',
        events_since: 5,
        last_seen_at: new Date(ignoredBlock.created_at + 404).toISOString(),
      },
    ]);
    assert.equal(blockStatus(await block('device-held', BRIEF.nycTower)), 'active', 'the tower that honours its block');
    assert.equal(remediator.counters.ineffective, 1);
  });

  it('a carrier-wide block reaches every tower of the carrier; 100 automatic requests at its towers merge into it, no tower command; lifting it reaches them all', async () => {
    const kv = await new Kvm(nc).open(BLOCKS_BUCKET);
    const towersOf = (carrier: string): string[] =>
      view
        .list('tower')
        .filter((t) => t.carrier_ids.includes(carrier))
        .map((t) => t.id)
        .sort();
    // A carrier whose towers all answer (not the silent one).
    const carrier = view
      .list('carrier')
      .map((c) => c.id)
      .find((c) => towersOf(c).length >= 2 && !towersOf(c).includes('tower128'));
    assert.ok(carrier !== undefined, 'a carrier with answering towers');
    const reach = towersOf(carrier);
    const elsewhere = view.list('tower').find((t) => !t.carrier_ids.includes(carrier))?.id ?? assert.fail('a tower of another carrier');
    const wide = request({ device_id: 'device-wide', trigger: 'manual', requested_by: 'admin@acme', scope: 'carrier', carrier, tower_id: '' });
    await publish(wide);
    await until(async () => (await outcomes(wide.alert_id)).length === 1, 15_000, 'the carrier-wide block');
    assert.deepEqual(await outcomes(wide.alert_id), [{ status: 'success', attempts: 1, trigger: 'manual' }]);
    for (const t of reach) assert.equal(towers.allows({ tower: t, device: 'device-wide', app: 'x' }), false, `blocked at ${t}`);
    assert.equal(towers.allows({ tower: elsewhere, device: 'device-wide', app: 'x' }), true, 'not at another carrier');
    const key = blockKey({ enterprise_id: BRIEF.acme, device_id: 'device-wide', app_id: null, scope: 'carrier', carrier, tower_id: '' });
    const made = (await kv.get(key))!.json<Block>();
    assert.deepEqual([made.scope, made.carrier, made.towers], ['carrier', carrier, reach]);

    const commands = towers.commands;
    const merged = remediator.counters.merged;
    const repeated = Array.from({ length: 100 }, (_, i) => request({ device_id: 'device-wide', tower_id: reach[i % reach.length]!, carrier }));
    await Promise.all(repeated.map((r) => publish(r)));
    await until(async () => remediator.counters.merged - merged === 100, 30_000, '100 merged');
    assert.equal(towers.commands, commands, 'no tower command for them');
    assert.equal((await kv.get(key))!.json<Block>().hits, 101);
    // An app block at one of its towers is covered too.
    const app = request({ device_id: 'device-wide', tower_id: reach[0]!, carrier, action: 'block_app', app_id: BRIEF.slack });
    await publish(app);
    await until(async () => (await outcomes(app.alert_id)).length === 1, 15_000, 'the app request');
    assert.equal((await outcomes(app.alert_id))[0]!.status, 'merged');

    const { request: lift } = unblockRequestOf((await kv.get(key))!.json<Block>(), { now: Date.now(), requestedBy: 'admin@acme' });
    await publish(lift);
    await until(async () => (await kv.get(key))?.operation === 'DEL', 15_000, 'the block lifted');
    for (const t of reach) assert.equal(towers.allows({ tower: t, device: 'device-wide', app: 'x' }), true, `carried again at ${t}`);
  });
});

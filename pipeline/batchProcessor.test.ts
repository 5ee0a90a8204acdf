import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ControlPlaneStore, ControlPlaneView } from '../core/controlPlane/index.js';
import type { UsageEvent } from '../core/domain.js';
import { withNats } from '../core/testing/natsFixture.js';
import { encodeUsageEvent, encodeUsageFrame } from '../core/wire.js';
import { briefEvent } from '../fixtures/briefEvents.js';
import { seedWorld } from '../fixtures/seed.js';
import { createTrafficGenerator } from '../fixtures/traffic.js';
import { BRIEF, generateWorld } from '../fixtures/world.js';
import { worldDirectory, worldPolicyInputs } from '../fixtures/worldPolicies.js';
import { controlPlaneDirectory, enrichEvent, evaluateReference, normalizePolicies, PolicyRegistry } from '../rules-wasm/index.js';
import { processBatch, type BatchContext } from './batchProcessor.js';

const nats = await withNats();
const world = generateWorld({ seed: 3, enterprises: 3, usersPerEnterprise: 8, towers: 6 });
/** A fixed time for the events, so that no verdict depends on when the test runs. */
const BRIEF_TS = Date.parse('2025-06-12T14:00:00Z');

describe('processBatch', () => {
  let view: ControlPlaneView;
  let registry: PolicyRegistry;
  let ctx: BatchContext;

  before(async () => {
    const nc = await nats.connect();
    await seedWorld(await ControlPlaneStore.open(nc), world);
    view = await ControlPlaneView.open(nc);
    registry = await PolicyRegistry.open(view);
    ctx = { directory: controlPlaneDirectory(view), view, module: (id) => registry.module(id) };
  });
  after(async () => {
    registry.close();
    await view.close();
  });

  it("denies John Doe's Slack upload, alerts with who and where, and asks for auto-remediation", () => {
    const john = briefEvent(7, { ts: BRIEF_TS, bytes_up: 2048, bytes_down: 100 });
    const out = processBatch([{ seq: 11, subject: 'usage.att.tower123', data: encodeUsageEvent(john) }], ctx);
    assert.equal(out.counts.events, 1);
    assert.equal(out.counts.violations, 1);
    const row = out.appUsage[0] ?? assert.fail('no row');
    assert.deepEqual(row.slice(0, 9), ['acme', john.ts, 'att', 'tower123', 7, 11, 'device123', 'user123', 'John Doe']);
    assert.deepEqual(row.slice(9, 16), ['app123', 'Slack', 'messaging', 'action789', 'Upload File', 2048, 100]);
    assert.equal(row[16], 'deny');
    assert.equal(row[17], 'policy123');
    assert.equal(row[18], 'Admin Policy');
    assert.equal(row[20], 'high');
    assert.equal(row[21], 'block_device');
    assert.equal(row[22], registry.module('acme')?.hash);
    const alert = out.alerts[0] ?? assert.fail('no alert');
    assert.equal(alert.alert_id, 'att:tower123:7');
    assert.equal(alert.user_name, 'John Doe');
    assert.equal(alert.app_name, 'Slack');
    assert.equal(alert.action, 'Upload File');
    assert.equal(alert.tower_location, 'New York City');
    assert.equal(alert.policy_name, 'Admin Policy');
    assert.equal(out.violations.length, 1);
    assert.deepEqual(
      out.remediations.map((r) => [r.alert_id, r.action, r.device_id]),
      [['att:tower123:7', 'block_device', 'device123']],
    );
  });

  it('agrees with the reference evaluator on generated traffic; unknown devices are unregistered; bad frames are dead letters', () => {
    const generator = createTrafficGenerator(world, { seed: 5, violationRatio: 0.2, unknownDeviceRatio: 0.02 });
    const frames = generator.nextEvents(4000);
    const messages = frames.map((f, i) => ({ seq: i + 1, subject: `usage.${f.carrier}.${f.tower}`, data: encodeUsageFrame(f.carrier, f.tower, f.events) }));
    const bad = generator.badFrame('garbage');
    messages.push({ seq: 9999, subject: 'usage.att.tower123', data: bad.bytes });
    const out = processBatch(messages, ctx);

    const dir = worldDirectory(world);
    const sets = new Map(world.enterprises.map((e) => [e.id, normalizePolicies(worldPolicyInputs(world, e.id), { timezone: e.timezone })]));
    const events = frames.flatMap((f) => f.events);
    assert.equal(out.counts.events, events.length);
    let denied = 0;
    let unregistered = 0;
    events.forEach((e, i) => {
      const row = out.appUsage[i] ?? assert.fail(`no row ${i}`);
      const enriched = enrichEvent(dir, e);
      if (!enriched.enforced) {
        unregistered++;
        assert.equal(row[16], 'unregistered');
        return;
      }
      const expected = evaluateReference(sets.get(enriched.enterpriseId) ?? assert.fail('no policies'), enriched.event);
      assert.equal(row[16], expected.permission, `event ${i}`);
      assert.equal(row[19], expected.rule_id ?? '', `event ${i}`);
      if (expected.permission === 'deny') denied++;
    });
    assert.ok(unregistered > 0, 'some events come from unknown devices');
    assert.equal(out.counts.violations, denied);
    assert.equal(out.alerts.length, denied);
    assert.ok(denied > events.length * 0.1, `${denied} denials`);
    // Only enterprises whose plan includes auto-remediation get remediation requests.
    assert.ok(out.remediations.length > 0);
    const auto = new Set(world.enterprises.filter((e) => world.plans.find((p) => p.id === e.plan_id)?.auto_remediation).map((e) => e.id));
    assert.ok(!auto.has('globex'));
    assert.ok(
      out.remediations.every((r) => auto.has(r.enterprise_id)),
      'remediation only on auto-remediation plans',
    );
    assert.deepEqual(
      out.deadLetters.map((d) => [d.seq, d.summary.reasons[0]?.code, d.summary.reasons[0]?.index, d.summary.total]),
      [[9999, bad.expectedCode, -1, 1]],
    );
    assert.equal(out.storedSeqs.length, frames.length);
  });

  const ev = (id: number, fields: Partial<UsageEvent> = {}): UsageEvent => briefEvent(id, { ts: BRIEF_TS, bytes_up: 1, bytes_down: 1, ...fields });

  it('the subject is the truth: a payload of another carrier or tower, or a malformed subject, is dead-lettered whole', () => {
    const forged = encodeUsageFrame('verizon', 'tower124', [
      ev(1, { carrier: 'verizon', tower: 'tower124' }),
      ev(2, { carrier: 'verizon', tower: 'tower124' }),
    ]);
    const good = encodeUsageFrame('att', BRIEF.nycTower, [ev(3)]);
    const out = processBatch(
      [
        { seq: 1, subject: 'usage.att.tower123', data: forged },
        { seq: 2, subject: 'usage.att', data: good },
        { seq: 3, subject: 'usage.att.tower123.extra', data: good },
        { seq: 4, subject: 'usage.att.tower124', data: good },
        { seq: 5, subject: 'usage.att.tower123', data: encodeUsageEvent(ev(9, { carrier: 'verizon' })) },
        { seq: 6, subject: 'usage.att.tower123', data: good },
      ],
      ctx,
    );
    assert.deepEqual(
      out.deadLetters.map((d) => [d.seq, d.summary.reasons.map((r) => [r.code, r.index])]),
      [
        [1, [['subject_mismatch', -1]]],
        [2, [['bad_subject', -1]]],
        [3, [['bad_subject', -1]]],
        [4, [['subject_mismatch', -1]]],
        [5, [['subject_mismatch', -1]]],
      ],
    );
    assert.deepEqual(out.storedSeqs, [6]);
    assert.deepEqual(
      out.appUsage.map((r) => [r[2], r[3], r[4]]),
      [['att', 'tower123', 3]],
    );
  });

  it('a duplicate event_id within a frame is stored once; the later copy is dead-lettered with its row index', () => {
    const rows = [ev(5), ev(6), ev(5, { bytes_up: 99 }), ev(7), ev(6)];
    const out = processBatch([{ seq: 1, subject: 'usage.att.tower123', data: encodeUsageFrame('att', BRIEF.nycTower, rows) }], ctx);
    assert.deepEqual(
      out.appUsage.map((r) => [r[4], r[14]]),
      [
        [5, 1],
        [6, 1],
        [7, 1],
      ],
    );
    assert.deepEqual(
      out.deadLetters[0]?.summary.reasons.map((r) => [r.code, r.index, r.event_id]),
      [
        ['duplicate_event_id', 2, 5],
        ['duplicate_event_id', 4, 6],
      ],
    );
    // With a rejected row before it, the index is still the row's position in the frame.
    const mixed = encodeUsageFrame('att', BRIEF.nycTower, [ev(1), ev(2, { bytes_up: -1 }), ev(1)]);
    const out2 = processBatch([{ seq: 2, subject: 'usage.att.tower123', data: mixed }], ctx);
    assert.deepEqual(
      out2.deadLetters[0]?.summary.reasons.map((r) => [r.code, r.index]),
      [
        ['bad_field', 1],
        ['duplicate_event_id', 2],
      ],
    );
    assert.equal(out2.appUsage.length, 1);
  });

  it('10,000 rejected rows make one dead letter with a bounded list of reasons and the total', () => {
    const rows = Array.from({ length: 10_000 }, (_, i) => ev(i + 1, { bytes_up: -1 }));
    const out = processBatch([{ seq: 1, subject: 'usage.att.tower123', data: encodeUsageFrame('att', BRIEF.nycTower, rows) }], ctx);
    assert.equal(out.deadLetters.length, 1);
    const s = out.deadLetters[0]?.summary ?? assert.fail();
    assert.equal(s.total, 10_000);
    assert.equal(s.reasons.length, 100);
    assert.deepEqual(s.codes, { bad_field: 10_000 });
    assert.equal(out.counts.rejectedEvents, 10_000);
    assert.equal(out.appUsage.length, 0);
  });
});

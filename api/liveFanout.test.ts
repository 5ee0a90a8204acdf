import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { LiveMessage } from '../core/live.js';
import { testAlert } from '../core/testing/alerts.js';
import { HEARTBEAT_TOPIC, LiveFanout, type FanoutHub, type LiveFilters } from './liveFanout.js';

/** A hub like uWS: topics with subscribed sockets; records what each socket received. */
class Recorder implements FanoutHub<string> {
  readonly topics = new Map<string, Set<string>>();
  readonly received = new Map<string, LiveMessage[]>();
  numSubscribers(topic: string): number {
    return this.topics.get(topic)?.size ?? 0;
  }
  publish(topic: string, message: string): void {
    for (const socket of this.topics.get(topic) ?? []) this.send(socket, message);
  }
  send(socket: string, message: string): void {
    const list = this.received.get(socket) ?? [];
    list.push(JSON.parse(message) as LiveMessage);
    this.received.set(socket, list);
  }
  subscribe(socket: string, topics: readonly string[]): void {
    for (const t of topics) {
      const set = this.topics.get(t) ?? new Set();
      set.add(socket);
      this.topics.set(t, set);
    }
  }
  /** The alert ids a socket got, as `alert` messages and as `alerts` batches. */
  ids(socket: string): { alert: string[]; alerts: string[][] } {
    const got = this.received.get(socket) ?? [];
    return {
      alert: got.flatMap((m) => (m.type === 'alert' ? [m.alert_id] : [])),
      alerts: got.flatMap((m) => (m.type === 'alerts' ? [m.alerts.map((a) => a.alert_id)] : [])),
    };
  }
}

function setUp(sockets: Record<string, { enterprise: string; filters: LiveFilters }>): { hub: Recorder; fanout: LiveFanout<string> } {
  const hub = new Recorder();
  const fanout = new LiveFanout(hub);
  for (const [socket, { enterprise, filters }] of Object.entries(sockets)) hub.subscribe(socket, fanout.join(socket, enterprise, filters));
  return { hub, fanout };
}

describe('live fan-out', () => {
  it('sends each alert to its enterprise only, as the page sees it', () => {
    const { hub, fanout } = setUp({ acme: { enterprise: 'acme', filters: {} }, globex: { enterprise: 'globex', filters: {} } });
    const counts = fanout.alerts([testAlert('a1'), testAlert('g1', { enterprise_id: 'globex' }), testAlert('a2')]);
    assert.deepEqual(hub.ids('acme'), { alert: ['a1', 'a2'], alerts: [] });
    assert.deepEqual(hub.ids('globex'), { alert: ['g1'], alerts: [] });
    assert.deepEqual(counts, { alert: 3, alerts: 0 });
    const first = hub.received.get('acme')?.[0];
    // The view: no enterprise, coordinates or version; a date; an empty rule id is null.
    const { enterprise_id: _enterprise, ts: _ts, lat: _lat, lon: _lon, policy_version: _version, ...shown } = testAlert('a1');
    assert.deepEqual(first, { type: 'alert', ...shown, rule_id: null, timestamp: '2026-01-01T00:00:00.000Z' });
  });

  it('filters on severity by topic, and on tower, app or user one socket at a time', () => {
    const { hub, fanout } = setUp({
      severe: { enterprise: 'acme', filters: { severity: ['high', 'critical'] } },
      low: { enterprise: 'acme', filters: { severity: ['low'] } },
      tower: { enterprise: 'acme', filters: { tower_id: 't2' } },
      userAndSeverity: { enterprise: 'acme', filters: { user_id: 'u2', severity: ['critical'] } },
    });
    const counts = fanout.alerts([
      testAlert('a1'),
      testAlert('a2', { tower_id: 't2', severity: 'low' }),
      testAlert('a3', { user_id: 'u2', severity: 'critical' }),
      testAlert('a4', { user_id: 'u2' }),
    ]);
    assert.deepEqual(hub.ids('severe').alert, ['a1', 'a3', 'a4']);
    assert.deepEqual(hub.ids('low').alert, ['a2']);
    assert.deepEqual(hub.ids('tower').alert, ['a2']);
    assert.deepEqual(hub.ids('userAndSeverity').alert, ['a3']);
    assert.equal(counts.alert, 6);
  });

  it('batches: one message per enterprise per call, filters applied, never single alerts', () => {
    const { hub, fanout } = setUp({
      batched: { enterprise: 'acme', filters: { batch: true } },
      batchedHigh: { enterprise: 'acme', filters: { batch: true, severity: ['high'] } },
      batchedLow: { enterprise: 'acme', filters: { batch: true, severity: ['low'] } },
      batchedGlobex: { enterprise: 'globex', filters: { batch: true } },
    });
    const counts = fanout.alerts([testAlert('a1'), testAlert('a2', { severity: 'medium' }), testAlert('g1', { enterprise_id: 'globex' })]);
    assert.deepEqual(hub.ids('batched'), { alert: [], alerts: [['a1', 'a2']] });
    assert.deepEqual(hub.ids('batchedHigh'), { alert: [], alerts: [['a1']] });
    assert.deepEqual(hub.ids('batchedLow'), { alert: [], alerts: [] }, 'no empty batch');
    assert.deepEqual(hub.ids('batchedGlobex'), { alert: [], alerts: [['g1']] });
    assert.deepEqual(counts, { alert: 0, alerts: 3 });
  });

  it('sends typed events to every socket of the enterprise, whatever its filters; a socket that left gets nothing', () => {
    const { hub, fanout } = setUp({
      plain: { enterprise: 'acme', filters: {} },
      tower: { enterprise: 'acme', filters: { tower_id: 't1' } },
      batched: { enterprise: 'acme', filters: { batch: true } },
      globex: { enterprise: 'globex', filters: {} },
    });
    const text = JSON.stringify({ type: 'remediation', action_id: 'ra_x' });
    assert.equal(fanout.toEnterprise('acme', text), 3);
    for (const s of ['plain', 'tower', 'batched'])
      assert.deepEqual(
        hub.received.get(s)?.map((m) => m.type),
        ['remediation'],
      );
    assert.equal(hub.received.get('globex'), undefined);

    fanout.leave('tower', 'acme');
    fanout.alerts([testAlert('a1')]);
    assert.deepEqual(hub.ids('tower').alert, []);
    assert.deepEqual(hub.ids('plain').alert, ['a1']);
  });

  it('every socket subscribes the heartbeat and its enterprise events; own-send sockets no alert topic', () => {
    const fanout = new LiveFanout(new Recorder());
    assert.deepEqual(fanout.join('a', 'acme', {}), [HEARTBEAT_TOPIC, 'enterprise/acme', 'alerts/acme']);
    assert.deepEqual(fanout.join('b', 'acme', { severity: ['low', 'high'] }), [
      HEARTBEAT_TOPIC,
      'enterprise/acme',
      'alerts/acme/severity/low',
      'alerts/acme/severity/high',
    ]);
    assert.deepEqual(fanout.join('c', 'acme', { batch: true }), [HEARTBEAT_TOPIC, 'enterprise/acme', 'alerts/acme/batch']);
    assert.deepEqual(fanout.join('d', 'acme', { app_id: 'slack' }), [HEARTBEAT_TOPIC, 'enterprise/acme']);
    assert.deepEqual(fanout.join('e', 'acme', { batch: true, severity: ['low'] }), [HEARTBEAT_TOPIC, 'enterprise/acme']);
  });
});

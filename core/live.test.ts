import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Packr } from 'msgpackr';
import {
  ALL_ALERTS_SUBJECT,
  ALL_ENTERPRISE_EVENTS_SUBJECT,
  alertsSubject,
  decodeAlerts,
  encodeAlerts,
  encodeEnterpriseEvent,
  enterpriseEventsSubject,
  enterpriseEventType,
  enterpriseOfSubject,
} from './live.js';
import { testAlert } from './testing/alerts.js';

const packr = new Packr({ useRecords: false });

const ALERT = testAlert('att:tower123:1', { tower_id: 'tower123', lat: 40.7, lon: -74.01, rule_id: null, remediation: 'block_device', policy_version: 'abc' });

describe('live subjects', () => {
  it('spell alerts.<enterprise> and events.<enterprise>, and read the enterprise back', () => {
    assert.equal(alertsSubject('acme'), 'alerts.acme');
    assert.equal(enterpriseEventsSubject('acme'), 'events.acme');
    assert.equal(ALL_ALERTS_SUBJECT, 'alerts.*');
    assert.equal(ALL_ENTERPRISE_EVENTS_SUBJECT, 'events.*');
    assert.equal(enterpriseOfSubject(alertsSubject('acme')), 'acme');
    assert.equal(enterpriseOfSubject(enterpriseEventsSubject('globex')), 'globex');
    assert.equal(enterpriseOfSubject('usage.att.tower123'), null);
    assert.equal(enterpriseOfSubject('events.'), null);
  });
});

describe('alerts codec', () => {
  it('round-trips the documented message', () => {
    const data = encodeAlerts([ALERT, { ...ALERT, alert_id: 'att:tower123:2', rule_id: 'r1', lat: null, lon: null, remediation: null }]);
    assert.ok(!Buffer.isBuffer(data), 'a plain Uint8Array, for the worker to hand over');
    const decoded = decodeAlerts(data);
    assert.ok(decoded.ok);
    assert.deepEqual(decoded.value, [ALERT, { ...ALERT, alert_id: 'att:tower123:2', rule_id: 'r1', lat: null, lon: null, remediation: null }]);
    assert.deepEqual(packr.unpack(data), { type: 'alerts', alerts: decoded.value });
  });

  it('refuses what is not an alerts message, with a reason, instead of throwing', () => {
    const cases: Array<[Uint8Array, RegExp]> = [
      [new Uint8Array([0x82, 0xa4, 0x74]), /not msgpack/],
      [packr.pack(null), /expected \{ type: "alerts"/],
      [packr.pack({ type: 'alerts' }), /expected/],
      [packr.pack({ type: 'other', alerts: [ALERT] }), /expected/],
      [packr.pack({ type: 'alerts', alerts: [ALERT, 'x'] }), /^alerts\[1\] must be a map$/],
      [packr.pack({ type: 'alerts', alerts: [{ ...ALERT, user_name: 7 }] }), /^alerts\[0\]\.user_name must be a string$/],
      [packr.pack({ type: 'alerts', alerts: [{ ...ALERT, policy_version: undefined }] }), /policy_version must be a string/],
      [packr.pack({ type: 'alerts', alerts: [{ ...ALERT, rule_id: 3 }] }), /rule_id must be a string or null/],
      [packr.pack({ type: 'alerts', alerts: [{ ...ALERT, lat: '40' }] }), /lat must be a number or null/],
      [packr.pack({ type: 'alerts', alerts: [{ ...ALERT, ts: 1e20 }] }), /ts must be milliseconds/],
      [packr.pack({ type: 'alerts', alerts: [{ ...ALERT, ts: '2026-01-01' }] }), /ts must be milliseconds/],
    ];
    for (const [data, reason] of cases) {
      const decoded = decodeAlerts(data);
      assert.ok(!decoded.ok, `refused: ${reason}`);
      assert.match(decoded.reason, reason);
    }
  });
});

describe('dashboard events', () => {
  it('are JSON; only the type is read', () => {
    const text = encodeEnterpriseEvent({
      type: 'remediation',
      action_id: 'ra_1',
      alert_id: 'a1',
      action_name: 'Block Device',
      status: 'success',
      trigger: 'auto',
      device_id: 'd1',
      tower_id: 't1',
      attempts: 1,
      reason: null,
      executed_at: '2026-01-01T00:00:00.000Z',
    });
    assert.deepEqual(enterpriseEventType(text), { ok: true, value: 'remediation' });
    assert.deepEqual(enterpriseEventType('{"type":"test.filler","data":"x"}'), { ok: true, value: 'test.filler' });
    for (const bad of ['{', 'null', '[]', '{"type":3}', '{}']) assert.equal(enterpriseEventType(bad).ok, false, bad);
  });
});

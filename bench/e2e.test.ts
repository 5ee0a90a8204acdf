/** The e2e bench's latency record against a real nats-server: the warm-up is reported apart. */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { alertsSubject, encodeAlerts } from '../core/live.js';
import { withNats } from '../core/testing/natsFixture.js';
import { briefAlert } from '../fixtures/briefEvents.js';
import { alertLatencies } from './e2e.js';

const nats = await withNats();

test('alerts within the warm-up of the first one are reported apart from the percentiles', async () => {
  const nc = await nats.connect();
  after(() => nc.close());
  const alerts = alertLatencies(nc, 300);
  const publish = (latencyMs: number, n: number): void => {
    const ts = Date.now() - latencyMs;
    nc.publish(alertsSubject('acme'), encodeAlerts(Array.from({ length: n }, (_, i) => briefAlert(`att:t1:${latencyMs}-${i}`, { ts }))));
  };
  // The start: 50 alerts 2 s late; then, past the warm-up, 200 on time.
  publish(2000, 50);
  await nc.flush();
  await new Promise((r) => setTimeout(r, 400));
  publish(0, 200);
  await nc.flush();
  await new Promise((r) => setTimeout(r, 100));
  alerts.stop();
  const steady = alerts.percentiles();
  const warm = alerts.warmupPercentiles();
  assert.ok(steady.p99 < 1000, `steady p99 ${steady.p99} ms leaves the warm-up out`);
  assert.ok(warm !== null && warm.p50 >= 2000, `warm-up p50 ${warm?.p50} ms`);

  const none = alertLatencies(nc, 0);
  publish(0, 1);
  await nc.flush();
  await new Promise((r) => setTimeout(r, 100));
  none.stop();
  assert.equal(none.warmupPercentiles(), null, 'no warm-up: nothing apart');
  assert.ok(none.percentiles().p99 < 1000);
});

/**
 * The api while its NATS broker is away: reads served from the process's view go on, writes
 * that need the broker answer 503 `unavailable` with Retry-After (not 500), and nothing ends
 * the process. (The broker coming back is covered by bin/chaos.test.ts and bin/resilience.test.ts.)
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startApiFixture } from './testing/apiFixture.js';

const fx = await startApiFixture({}, { reconnect: true });

test('broker away: view reads 200, writes 503 unavailable with Retry-After, the process stays up', { timeout: 60_000 }, async () => {
  assert.equal((await fx.call('POST', '/policies', { as: 'admin@acme', body: { policy_id: 'before_outage', name: 'Before' } })).status, 201);
  // The blocks and outputs buckets opened before (the previews' is opened after).
  assert.equal((await fx.call('GET', '/blocks', { as: 'admin@acme' })).status, 200);
  assert.equal((await fx.call('GET', '/outputs', { as: 'admin@acme' })).status, 200);
  await fx.nats.server.close();
  const read = await fx.call('GET', '/towers', { as: 'admin@acme' });
  assert.equal(read.status, 200, read.text);
  // An account with no slice of the shared rate limit yet: the limit's bucket cannot be asked,
  // and the node counts alone instead of failing or hanging the request.
  const t0 = performance.now();
  const first = await fx.call('GET', '/towers', { as: 'viewer@acme' });
  assert.equal(first.status, 200, first.text);
  assert.ok(performance.now() - t0 < 3_000, `answered in ${Math.round(performance.now() - t0)} ms`);
  const write = await fx.call('POST', '/policies', { as: 'admin@acme', body: { policy_id: 'during_outage', name: 'During' } });
  assert.equal(write.status, 503, write.text);
  assert.equal(write.json.error.code, 'unavailable');
  assert.equal(write.headers.get('retry-after'), '2');
  // State kept in KV buckets: a clear 503 within seconds, never a 500 or a hung request.
  for (const [method, path, body] of [
    ['GET', '/blocks', undefined],
    ['GET', '/outputs', undefined],
    ['POST', '/outputs', { name: 'During', url: 'https://soc.example/hook' }],
    ['GET', '/policy-previews/pv_AAAAAAAAAAAA', undefined],
  ] as const) {
    const started = performance.now();
    const r = await fx.call(method, path, { as: 'admin@acme', body });
    assert.equal(r.status, 503, `${method} ${path}: ${r.text}`);
    assert.ok(performance.now() - started < 10_000, `${method} ${path} answered in ${Math.round(performance.now() - started)} ms`);
  }
  assert.equal((await fx.call('GET', '/healthz')).status, 200);
});

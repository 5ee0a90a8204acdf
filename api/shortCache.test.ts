import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ShortCache } from './shortCache.js';

test('shares one computation per key, serves stale while one refresh runs, forgets failures', async () => {
  const cache = new ShortCache<number>(1000);
  let calls = 0;
  let release: (() => void) | undefined;
  const compute = (): Promise<number> => {
    calls++;
    const n = calls;
    return new Promise((resolve) => (release = () => resolve(n)));
  };
  const a = cache.get('k', 0, compute);
  const b = cache.get('k', 10, compute);
  assert.equal(calls, 1, 'concurrent callers share the computation');
  release!();
  assert.equal(await a, 1);
  assert.equal(await b, 1);
  assert.equal(await cache.get('k', 500, compute), 1, 'fresh within the TTL');
  const stale = cache.get('k', 1500, compute);
  assert.equal(calls, 2, 'past the TTL a refresh starts');
  assert.equal(await stale, 1, 'and the stale answer is served meanwhile');
  assert.equal(await cache.get('k', 1600, compute), 1);
  assert.equal(calls, 2, 'one refresh at a time');
  release!();
  await new Promise((r) => setImmediate(r));
  assert.equal(await cache.get('k', 1700, compute), 2, 'the refreshed answer replaces it');
  assert.equal(await cache.get('k', 20_000, () => Promise.resolve(9)), 9, 'too stale: computed again');

  const failing = new ShortCache<number>(1000);
  await assert.rejects(failing.get('x', 0, () => Promise.reject(new Error('boom'))));
  assert.equal(await failing.get('x', 1, () => Promise.resolve(3)), 3, 'a failure is not kept');
  assert.equal(await new ShortCache<number>(0).get('y', 0, () => Promise.resolve(4)), 4);
});

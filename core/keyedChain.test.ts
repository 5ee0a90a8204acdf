import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeyedChain } from './keyedChain.js';

test('one task at a time per key, in order; other keys at once; a failure does not hold up the next; idle keys forgotten', async () => {
  const chain = new KeyedChain();
  const log: string[] = [];
  const step =
    (name: string, ms: number, fail = false) =>
    async (): Promise<string> => {
      log.push(`${name}+`);
      await new Promise((r) => setTimeout(r, ms));
      log.push(`${name}-`);
      if (fail) throw new Error(name);
      return name;
    };
  const a1 = chain.run('a', step('a1', 30, true));
  const a2 = chain.run('a', step('a2', 5));
  const b1 = chain.run('b', step('b1', 5));
  await assert.rejects(a1, /a1/);
  assert.equal(await a2, 'a2');
  assert.equal(await b1, 'b1');
  // b1 ran beside a1; a2 only after a1 ended.
  assert.ok(log.indexOf('b1+') < log.indexOf('a1-'), log.join(' '));
  assert.ok(log.indexOf('a2+') > log.indexOf('a1-'), log.join(' '));
  await new Promise((r) => setImmediate(r));
  assert.equal(chain.size, 0);
});

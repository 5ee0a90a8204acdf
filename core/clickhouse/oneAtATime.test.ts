import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OneAtATime } from './oneAtATime.js';

test('OneAtATime: calls run in turn, never two at once; a failure does not stop the next', async () => {
  const turns = new OneAtATime();
  const log: string[] = [];
  let running = 0;
  const call =
    (name: string, ms: number, fail = false) =>
    async (): Promise<string> => {
      running++;
      assert.equal(running, 1, `${name} started while another ran`);
      log.push(`start ${name}`);
      await new Promise((r) => setTimeout(r, ms));
      log.push(`end ${name}`);
      running--;
      if (fail) throw new Error(`${name} failed`);
      return name;
    };
  const a = turns.run(call('a', 30));
  const b = turns.run(call('b', 5, true));
  const c = turns.run(call('c', 1));
  assert.equal(turns.waiting, 3, 'none has started before the next tick');
  assert.equal(await a, 'a');
  await assert.rejects(b, /b failed/);
  assert.equal(await c, 'c');
  assert.deepEqual(log, ['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
  assert.equal(turns.waiting, 0);
});

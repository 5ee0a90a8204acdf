import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ConsumerMessages, JsMsg } from '@nats-io/jetstream';
import { MessageQueue } from './messageQueue.js';

/** A consume() iterator fed by hand (the queue's own logic under test; NATS is tested in pipeline.test.ts). */
function feed(): { open: () => Promise<ConsumerMessages>; push: (n: number) => void } {
  const pending: JsMsg[] = [];
  let wake: (() => void) | null = null;
  let seq = 0;
  let closed = false;
  const iterator = (async function* () {
    while (!closed) {
      const m = pending.shift();
      if (m !== undefined) yield m;
      else await new Promise<void>((r) => (wake = r));
    }
  })();
  const messages = Object.assign(iterator, {
    close: async () => {
      closed = true;
      wake?.();
      return null;
    },
  }) as unknown as ConsumerMessages;
  return {
    open: () => Promise.resolve(messages),
    push: (n) => {
      for (let i = 0; i < n; i++) pending.push({ seq: ++seq } as JsMsg);
      const w = wake;
      wake = null;
      w?.();
    },
  };
}

const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 20));

test('take and waitFor wait side by side: each wakes on the messages it needs, neither steals the other', async () => {
  const f = feed();
  const q = new MessageQueue(f.open, 100, (err) => assert.fail(err));
  try {
    let grown = false;
    const growing = q.waitFor(3, 5000).then(() => (grown = true));
    const t0 = performance.now();
    const taking = q.take(10, 0, () => false);
    await settle();
    f.push(1);
    const first = await taking;
    assert.deepEqual(
      first.map((m) => m.seq),
      [1],
    );
    assert.ok(performance.now() - t0 < 1000, 'take woke on the message, not on its one-second timeout');
    assert.equal(grown, false, 'waitFor(3) still waits: one message came, and take has it');
    f.push(2);
    await settle();
    assert.equal(grown, false);
    assert.equal(q.size, 2);
    f.push(1);
    await growing;
    assert.equal(q.size, 3);
    assert.deepEqual(
      (await q.take(10, 0, () => false)).map((m) => m.seq),
      [2, 3, 4],
    );
  } finally {
    await q.close();
  }
});

test('waitFor gives up after its time, and at once when the queue closes', async () => {
  const f = feed();
  const q = new MessageQueue(f.open, 100, (err) => assert.fail(err));
  f.push(1);
  await settle();
  const t0 = performance.now();
  await q.waitFor(5, 100);
  const waited = performance.now() - t0;
  assert.ok(waited >= 90 && waited < 1000, `waited ${waited} ms`);
  assert.equal(q.size, 1);
  await q.waitFor(1, 5000); // already there: no wait
  const closing = q.waitFor(5, 5000);
  assert.deepEqual(
    (await q.close()).map((m) => m.seq),
    [1],
  );
  const t1 = performance.now();
  await closing;
  assert.ok(performance.now() - t1 < 1000, 'a closed queue releases its waiters');
});

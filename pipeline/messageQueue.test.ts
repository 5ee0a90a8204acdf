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

/** Iterators opened in turn: the first never delivers (its pull was lost) until stopped; the next delivers `n`. */
function lostThenLive(n: number): { open: () => Promise<ConsumerMessages>; opened: () => number; stopped: () => number } {
  let opens = 0;
  let stops = 0;
  const iteratorOf = (deliver: number): ConsumerMessages => {
    let stop: (() => void) | null = null;
    let done = false;
    const iterator = (async function* () {
      for (let i = 1; i <= deliver; i++) yield { seq: i } as JsMsg;
      while (!done) await new Promise<void>((r) => (stop = r));
    })();
    const end = (): void => {
      done = true;
      stop?.();
    };
    return Object.assign(iterator, {
      stop: () => {
        stops++;
        end();
      },
      close: () => {
        end();
        return Promise.resolve(null);
      },
    }) as unknown as ConsumerMessages;
  };
  return {
    open: () => Promise.resolve(iteratorOf(opens++ === 0 ? 0 : n)),
    opened: () => opens,
    stopped: () => stops,
  };
}

test('a starving queue asks the server; when messages wait there, it drops the lost pull and pulls again', async () => {
  const f = lostThenLive(3);
  const renewed: number[] = [];
  let asked = 0;
  const q = new MessageQueue(f.open, 100, (err) => assert.fail(err), {
    afterMs: 200,
    waiting: () => Promise.resolve(++asked && 7),
    onRenew: (n) => renewed.push(n),
  });
  try {
    const t0 = performance.now();
    await q.waitFor(3, 5_000);
    assert.equal(q.size, 3, 'the new pull delivered');
    assert.ok(performance.now() - t0 < 2_000);
    assert.deepEqual(renewed, [7]);
    assert.deepEqual([f.opened(), f.stopped()], [2, 1], 'the first iterator stopped, a second opened');
    // Messages waiting in the buffer: nothing to ask.
    const before = asked;
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(asked, before);
  } finally {
    await q.close();
  }
});

test('a starving queue whose server holds nothing keeps its pull', async () => {
  const f = lostThenLive(3);
  let asked = 0;
  const q = new MessageQueue(f.open, 100, (err) => assert.fail(err), {
    afterMs: 100,
    waiting: () => Promise.resolve(++asked && 0),
    onRenew: () => assert.fail('nothing waits at the server'),
  });
  try {
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(asked >= 2, `asked ${asked} times`);
    assert.deepEqual([f.opened(), f.stopped()], [1, 0]);
  } finally {
    await q.close();
  }
});

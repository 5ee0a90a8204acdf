import assert from 'node:assert/strict';
import { test } from 'node:test';
import { jetstream } from '@nats-io/jetstream';
import { connectNats, isTransientNatsError, publishWithRetry, startNatsServer } from './nats/index.js';
import { backoffDelay, retryFor, RetryBudgetExhaustedError } from './retry.js';

/** What `p` rejects with; null when it resolves. */
const rejectionOf = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => null,
    (e: unknown) => e,
  );

test('backoff doubles from the initial delay, is capped, and jitters within half a step', () => {
  // [attempt, random(), delay] with an initial delay of 100 ms and a cap of 2000 ms
  const cases = [
    [1, 0, 50],
    [1, 1, 100],
    [3, 1, 400],
    [30, 1, 2000],
    [30, 0, 1000],
  ] as const;
  for (const [attempt, random, delay] of cases) {
    const jitter = () => random;
    assert.equal(backoffDelay(attempt, 100, 2000, jitter), delay);
  }
});

test('retries by elapsed time: gives up once the budget is spent, not after a count', async () => {
  let attempts = 0;
  const started = performance.now();
  await assert.rejects(
    retryFor(
      'flaky',
      async () => {
        attempts++;
        throw new Error('still down');
      },
      { budgetMs: 400, initialDelayMs: 10, maxDelayMs: 40 },
    ),
    (err: unknown) =>
      err instanceof RetryBudgetExhaustedError && /flaky: gave up after \d+ attempts/.test(err.message) && (err.cause as Error).message === 'still down',
  );
  const elapsed = performance.now() - started;
  assert.ok(elapsed <= 450 && elapsed >= 300, `spent ${elapsed} ms of a 400 ms budget`);
  assert.ok(attempts >= 8, `${attempts} attempts in 400 ms at ≤ 40 ms apart`);
});

test('an error that is not retryable is thrown at once; success after failures returns', async () => {
  let n = 0;
  await assert.rejects(
    retryFor(
      'x',
      async () => {
        n++;
        throw new TypeError('bad');
      },
      { retryable: (e) => !(e instanceof TypeError) },
    ),
    TypeError,
  );
  assert.equal(n, 1);
  const retries: number[] = [];
  const v = await retryFor(
    'y',
    async (attempt) => {
      if (attempt < 3) throw new Error('no');
      return attempt;
    },
    { initialDelayMs: 1, onRetry: (i) => retries.push(i.attempt) },
  );
  assert.equal(v, 3);
  assert.deepEqual(retries, [1, 2]);
});

test('an abort ends the waiting with the last error', async () => {
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 50);
  const started = performance.now();
  await assert.rejects(
    retryFor(
      'z',
      async () => {
        throw new Error('down');
      },
      { budgetMs: 60_000, initialDelayMs: 1000, signal: ac.signal },
    ),
    /down/,
  );
  assert.ok(performance.now() - started < 1000);
});

test('real NATS failures are classified: a broker away is transient, a closed connection or a bad subject is not', async () => {
  const server = await startNatsServer();
  const nc = await connectNats(server.url, 'retry-test', { maxReconnectAttempts: -1, reconnectTimeWait: 50 });
  try {
    const js = jetstream(nc, { timeout: 300 });
    // No stream listens on this subject: JetStream answers no one (no responders).
    const noStream = await rejectionOf(js.publish('nowhere.at.all', new Uint8Array([1])));
    assert.ok(noStream instanceof Error && isTransientNatsError(noStream), String(noStream));
    const badSubject = await rejectionOf(Promise.resolve().then(() => nc.publish('bad subject', 'x')));
    assert.ok(badSubject instanceof Error && !isTransientNatsError(badSubject), String(badSubject));

    // Broker gone: a timeout, retried until the budget ends; back within the budget: it goes through.
    await server.close();
    const gone = await rejectionOf(publishWithRetry(js, 'nowhere.at.all', new Uint8Array([1]), {}, { budgetMs: 600, initialDelayMs: 20, maxDelayMs: 100 }));
    assert.ok(gone instanceof RetryBudgetExhaustedError, String(gone));
    assert.ok(isTransientNatsError(gone.cause), String(gone.cause));
  } finally {
    await nc.close();
    await server.close();
  }
  const closed = await rejectionOf(Promise.resolve().then(() => nc.publish('a.b', 'x')));
  assert.ok(closed instanceof Error && !isTransientNatsError(closed), String(closed));
});

import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { describe, it } from 'node:test';
import { DEFAULT_MAX_DELIVER } from '../core/config.js';
import { DEFAULT_RETRY_BUDGET_MS } from '../core/retry.js';
import { DEFAULT_DISCOVERY_BATCH_SIZE, DEFAULT_DISCOVERY_LINGER_MS, DISCOVERY_CONSUMER, resolveDiscoveryOptions } from './discovery.js';
import {
  ACK_WAIT_MS,
  DEFAULT_BATCH_MESSAGES,
  DEFAULT_COMMIT_INTERVAL_MS,
  DEFAULT_CONSUMER,
  DEFAULT_LINGER_MS,
  resolvePipelineOptions,
  RETRY_DELAY_MS,
} from './pipeline.js';
import {
  DEFAULT_COMMAND_ATTEMPTS,
  DEFAULT_COMMAND_BACKOFF_MS,
  DEFAULT_COMMAND_TIMEOUT_MS,
  DEFAULT_REMEDIATION_CONCURRENCY,
  resolveRemediatorOptions,
} from './remediator.js';

const threads = Math.max(1, availableParallelism());

/** Each resolver: its defaults, values it keeps, and bad values with the error they get. */
const cases: Array<{
  name: string;
  resolve: (o: Record<string, unknown>) => unknown;
  defaults: Record<string, unknown>;
  given: Array<[Record<string, unknown>, Record<string, unknown>]>;
  bad: Array<[Record<string, unknown>, 'RangeError' | 'TypeError', RegExp]>;
}> = [
  {
    name: 'resolvePipelineOptions',
    resolve: resolvePipelineOptions,
    defaults: {
      threads,
      batchMessages: DEFAULT_BATCH_MESSAGES,
      lingerMs: DEFAULT_LINGER_MS,
      maxInFlight: threads + 1,
      commitIntervalMs: DEFAULT_COMMIT_INTERVAL_MS,
      consumer: DEFAULT_CONSUMER,
      ackWaitMs: ACK_WAIT_MS,
      natsRetryMs: DEFAULT_RETRY_BUDGET_MS,
      maxDeliver: DEFAULT_MAX_DELIVER,
      retryDelayMs: RETRY_DELAY_MS,
    },
    given: [
      // maxInFlight follows threads.
      [{ threads: 3, batchMessages: 1, lingerMs: 0, consumer: 'p2', maxDeliver: 1, retryDelayMs: 0, natsRetryMs: 0, ackWaitMs: 1500.5 }, { maxInFlight: 4 }],
    ],
    bad: [
      [{ threads: 0 }, 'RangeError', /^threads must be an integer ≥ 1, got 0$/],
      [{ batchMessages: 2.5 }, 'RangeError', /^batchMessages /],
      [{ lingerMs: -1 }, 'RangeError', /^lingerMs must be a number ≥ 0, got -1$/],
      [{ maxInFlight: -2 }, 'RangeError', /^maxInFlight /],
      [{ commitIntervalMs: -1 }, 'RangeError', /^commitIntervalMs must be a number ≥ 0, got -1$/],
      [{ ackWaitMs: 0 }, 'RangeError', /^ackWaitMs must be a number > 0/],
      [{ natsRetryMs: Number.NaN }, 'RangeError', /^natsRetryMs /],
      [{ maxDeliver: 0 }, 'RangeError', /^maxDeliver /],
      [{ retryDelayMs: Infinity }, 'RangeError', /^retryDelayMs /],
      [{ threads: '2' }, 'TypeError', /^threads must be a number, got string$/],
      [{ consumer: '' }, 'TypeError', /^consumer must be a non-empty string/],
    ],
  },
  {
    name: 'resolveRemediatorOptions',
    resolve: resolveRemediatorOptions,
    defaults: {
      commandTimeoutMs: DEFAULT_COMMAND_TIMEOUT_MS,
      maxAttempts: DEFAULT_COMMAND_ATTEMPTS,
      backoffMs: DEFAULT_COMMAND_BACKOFF_MS,
      concurrency: DEFAULT_REMEDIATION_CONCURRENCY,
    },
    given: [[{ commandTimeoutMs: 300, backoffMs: 0 }, {}]],
    bad: [
      [{ commandTimeoutMs: 0 }, 'RangeError', /^commandTimeoutMs must be a number > 0, got 0$/],
      [{ maxAttempts: 0 }, 'RangeError', /^maxAttempts must be an integer ≥ 1, got 0$/],
      [{ backoffMs: -5 }, 'RangeError', /^backoffMs /],
      [{ concurrency: 1.5 }, 'RangeError', /^concurrency /],
      [{ concurrency: '16' }, 'TypeError', /^concurrency must be a number, got string$/],
    ],
  },
  {
    name: 'resolveDiscoveryOptions',
    resolve: resolveDiscoveryOptions,
    defaults: { batchSize: DEFAULT_DISCOVERY_BATCH_SIZE, lingerMs: DEFAULT_DISCOVERY_LINGER_MS, consumer: DISCOVERY_CONSUMER },
    given: [[{ lingerMs: 100, consumer: 'discovery-replay' }, {}]],
    bad: [
      [{ batchSize: -1 }, 'RangeError', /^batchSize must be an integer ≥ 1, got -1$/],
      [{ batchSize: 10.5 }, 'RangeError', /^batchSize /],
      [{ lingerMs: -1 }, 'RangeError', /^lingerMs /],
      [{ consumer: 7 }, 'TypeError', /^consumer must be a non-empty string, got number$/],
    ],
  },
];

for (const c of cases) {
  describe(c.name, () => {
    it('fills in the defaults, also for options given as undefined', () => {
      assert.deepEqual(c.resolve({}), c.defaults);
      assert.deepEqual(c.resolve(Object.fromEntries(Object.keys(c.defaults).map((k) => [k, undefined]))), c.defaults);
    });

    it('keeps the values given', () => {
      for (const [input, derived] of c.given) assert.deepEqual(c.resolve(input), { ...c.defaults, ...input, ...derived });
    });

    it('throws naming the option for a value out of range or of the wrong kind', () => {
      for (const [input, name, message] of c.bad) assert.throws(() => c.resolve(input), { name, message }, JSON.stringify(input));
    });
  });
}

/**
 * The bounded chaos run of `npm test` (`towerwatch chaos --duration S` runs longer): `up` fed a
 * known set while its nats-server and `up` itself are SIGKILLed, fuzzed frames and api
 * requests beside it; afterwards exact counts, no crash, no 5xx, bounded memory.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chaosVerdict, DEFAULT_MAX_RSS_MB, runChaos } from './chaos.js';
import { chaosFuzzers } from './chaosFuzzers.js';

test('chaos: kills of nats-server and up, fuzzed frames and requests; stored == published, nothing crashes', { timeout: 300_000 }, async (t) => {
  const lines: string[] = [];
  const summary = await runChaos({ durationS: 20, rate: 1500, kills: 2, seed: 11, fuzzers: chaosFuzzers(), log: (l) => lines.push(l) });
  t.diagnostic(JSON.stringify(summary));
  assert.deepEqual(chaosVerdict(summary, DEFAULT_MAX_RSS_MB), [], `${JSON.stringify(summary, null, 2)}\n${lines.join('\n')}`);
  assert.deepEqual(summary.kills_by_target, { 'nats-server': 1, up: 1 });
  assert.ok(summary.events_published > 20_000, 'the known set was published');
  assert.ok(summary.fuzz_cases > 0 && summary.dead_letter_messages > 0, 'fuzzed frames were sent and dead-lettered');
});

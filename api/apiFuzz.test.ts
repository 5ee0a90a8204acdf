/**
 * The api under fuzzing (api/apiFuzz.ts): requests from the route table's schemas and far
 * outside them, with every demo role's token, none, or a forged one, against the real server
 * on real components. No 5xx, every 4xx in the envelope, and the server alive afterwards.
 * Bounded here (a fixed seed and number of cases); a chaos run calls fuzzApi with a duration.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BRIEF } from '../fixtures/world.js';
import { fuzzApi } from './apiFuzz.js';
import { startApiFixture } from './testing/apiFixture.js';

const fx = await startApiFixture();

test('fuzzing every route: no 5xx, every 4xx in the error envelope, the server still up', { timeout: 120_000 }, async () => {
  // Ids that exist (each kind, both enterprises) so that requests get past "not found".
  const some = <K extends 'user' | 'role' | 'policy' | 'device' | 'policy_rule'>(kind: K): string[] =>
    fx.api.view
      .list(kind, undefined)
      .slice(0, 4)
      .map((e) => e.id);
  const ids = [
    ...new Set([
      ...Object.values(BRIEF),
      'globex',
      ...some('user'),
      ...some('role'),
      ...some('policy'),
      ...some('device'),
      ...some('policy_rule'),
      ...fx.world.towers.slice(0, 2).map((t) => t.id),
      'att',
      'high',
      'critical',
    ]),
  ];
  const seed = Number(process.env['TOWERWATCH_FUZZ_SEED'] ?? 1414);
  const cases = Number(process.env['TOWERWATCH_FUZZ_CASES'] ?? 2000);
  const r = await fuzzApi({ url: fx.api.url, tokens: fx.tokens, cases, seed, ids, concurrency: 4 });
  const report = `seed ${r.seed}, ${r.cases} cases in ${r.durationMs} ms, by status ${JSON.stringify(r.byStatus)}`;
  process.stderr.write(`api fuzz: ${report}\n`);
  assert.ok(r.alive, `the server no longer answers /healthz (${report})`);
  assert.deepEqual(r.failures, [], report);
  assert.equal(r.fiveXX, 0, report);
  assert.ok(r.cases >= cases * 0.9, `most cases were sent: ${report}`);
  // The run reached past validation: successes and the main refusals all occurred.
  for (const status of [200, 400, 401, 404]) assert.ok((r.byStatus[status] ?? 0) > 0, `some ${status}s: ${report}`);
});

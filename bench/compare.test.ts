import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { readNewestResult } from './benchReport.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compareLatest, compareResults, valueAt, type Metric } from './compare.js';

const limits = (insert: number) => ({
  limit_events_per_s: insert,
  stages: [
    { stage: 'jetstream_publish', events_per_s: 5_000_000 },
    { stage: 'clickhouse_insert', events_per_s: insert },
  ],
});

test('valueAt reads dotted paths and stages by name; anything else is null', () => {
  assert.equal(valueAt(limits(130_000), 'stages[clickhouse_insert].events_per_s'), 130_000);
  assert.equal(valueAt(limits(130_000), 'stages[row_encoding].events_per_s'), null);
  assert.equal(valueAt({ latency_ms: { p99: 12 } }, 'latency_ms.p99'), 12);
  assert.equal(valueAt({ latency_ms: { p99: '12' } }, 'latency_ms.p99'), null);
  assert.equal(valueAt(undefined, 'events_per_s'), null);
});

test('ratios are this run ÷ baseline; the verdict knows which way is better and what is noise', () => {
  const metrics: Metric[] = [
    { benchmark: 'limits', path: 'limit_events_per_s', better: 'higher' },
    { benchmark: 'e2e', path: 'events_per_s', better: 'higher' },
    { benchmark: 'e2e', path: 'latency_ms.p99', better: 'lower' },
    { benchmark: 'api', path: 'cached_get.requests_per_s', better: 'higher' },
  ];
  const rows = compareResults(
    { limits: limits(100_000), e2e: { events_per_s: 50_000, latency_ms: { p99: 1000 } }, api: { cached_get: { requests_per_s: 30_000 } } },
    { limits: limits(105_000), e2e: { events_per_s: 30_000, latency_ms: { p99: 500 } } },
    metrics,
  );
  assert.deepEqual(
    rows.map((r) => [r.metric, r.ratio, r.verdict]),
    [
      ['limit_events_per_s', 1.05, 'within noise'],
      ['events_per_s', 0.6, 'worse'],
      ['latency_ms.p99', 0.5, 'better'],
      ['cached_get.requests_per_s', null, 'missing'],
    ],
  );
});

test('the command reads the newest run of each benchmark and the baseline files', async () => {
  const baseline = await mkdtemp(join(tmpdir(), 'tw-baseline-'));
  const results = await mkdtemp(join(tmpdir(), 'tw-results-'));
  await writeFile(join(baseline, 'limits.json'), JSON.stringify(limits(100_000)));
  await writeFile(join(results, 'limits-2026-01-01T00-00-00-000Z.json'), JSON.stringify(limits(50_000)));
  await writeFile(join(results, 'limits-2026-02-01T00-00-00-000Z.json'), JSON.stringify(limits(200_000)));
  const { rows } = await compareLatest({ baselineDir: baseline, resultsDir: results });
  const limit = rows.find((r) => r.metric === 'limit_events_per_s');
  assert.deepEqual(limit && [limit.baseline, limit.current, limit.ratio, limit.verdict], [100_000, 200_000, 2, 'better']);
  assert.ok(rows.filter((r) => r.benchmark !== 'limits').every((r) => r.verdict === 'missing'));
  // A newer result of another benchmark whose name starts the same (e2e-cluster) is not e2e's.
  await writeFile(join(results, 'e2e-2026-01-01T00-00-00-000Z.json'), JSON.stringify({ events_per_s: 1 }));
  await writeFile(join(results, 'e2e-cluster-2026-03-01T00-00-00-000Z.json'), JSON.stringify({ events_per_s: 2 }));
  assert.deepEqual((await readNewestResult('e2e', results))?.result, { events_per_s: 1 });
});

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { readNewestResult } from './benchReport.js';
import type { LimitsResult, LimitsStageName } from './limits.js';

const CLI = fileURLToPath(new URL('../bin/towerwatch.js', import.meta.url));
const STAGES: readonly LimitsStageName[] = ['jetstream_publish', 'jetstream_consume', 'decode_enrich_evaluate', 'row_encoding', 'clickhouse_insert'];

// Behaviour only: every stage is measured and the limit is the slowest; the figures are never judged.
test('bench limits --json measures every stage and names the slowest as the limit (the file bench e2e reads)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'towerwatch-limits-test-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const args = [CLI, 'bench', 'limits', '--json', '--events', '3000', '--frame-size', '250', '--cpu-ms', '50', '--results-dir', dir];
  const { stdout } = await promisify(execFile)(process.execPath, args, { timeout: 120_000 });
  const result = JSON.parse(stdout) as LimitsResult;

  assert.equal(result.events, 3000);
  assert.equal(result.frames, 12);
  assert.deepEqual(
    result.stages.map((s) => s.stage),
    STAGES,
  );
  for (const s of result.stages) {
    assert.ok(s.events_per_s > 0 && s.frames_per_s > 0 && s.seconds > 0 && s.cpu_us_per_event > 0, `${s.stage}: ${JSON.stringify(s)}`);
  }
  // The CPU ceiling: the cores divided among the pipeline's own stages (not the publisher's).
  const pipelineCpu = result.stages.filter((s) => s.stage !== 'jetstream_publish').reduce((n, s) => n + s.cpu_us_per_event, 0);
  assert.ok(Math.abs(result.pipeline_cpu_us_per_event - pipelineCpu) < 0.05, `${result.pipeline_cpu_us_per_event} vs ${pipelineCpu}`);
  assert.ok(Math.abs(result.cpu_ceiling_events_per_s - (result.cores * 1e6) / result.pipeline_cpu_us_per_event) <= 1 + result.cpu_ceiling_events_per_s * 0.01);
  for (const s of result.stages.filter((x) => x.per_core_events_per_s !== null)) {
    assert.ok((s.per_core_events_per_s ?? 0) > 0, `${s.stage} per core`);
  }
  assert.ok(
    result.inserts.some((i) => i.format === 'Native (spool file, sink path)'),
    'the sink path is among the insert formats',
  );
  for (const i of result.inserts) assert.ok(i.rows_per_s > 0, `${i.format}: ${i.rows_per_s}`);

  const slowest = Math.min(...result.stages.map((s) => s.events_per_s));
  assert.equal(result.limit_events_per_s, slowest);
  assert.equal(result.stages.find((s) => s.stage === result.limit_stage)?.events_per_s, slowest);

  const written = await readNewestResult('limits', dir);
  assert.equal(written?.result['limit_events_per_s'], result.limit_events_per_s);
});

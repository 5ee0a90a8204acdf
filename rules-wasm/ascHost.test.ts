import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { describe, it } from 'node:test';
import { AscHost, remoteAsc } from './ascHost.js';
import { compilePolicies, PolicyCompileError } from './compiler.js';
import type { EvalEvent } from './event.js';

const POLICIES = {
  policy_id: 'p1',
  name: 'Admin Policy',
  role_ids: ['r1'],
  rules: [{ rule_id: 'slack-upload', app_name: 'Slack', action: 'Upload File', permission: 'deny', severity: 'high' }],
};
const EVENT: EvalEvent = { role_ids: ['r1'], app: 'Slack', action: 'Upload File' };

describe('AscHost: one AssemblyScript compiler per process for the worker threads', () => {
  it('compiles for two worker threads at once, once, and their modules decide like a local compile', async () => {
    const channel = `test-asc-${randomUUID()}`;
    const host = new AscHost(channel, { idleSeconds: 1 });
    // Unique to this run: neither the memory nor a disk cache can answer, the compiler must run.
    const label = `asc host ${randomUUID()}`;
    try {
      const workers = [0, 1].map(
        () => new Worker(new URL('./testing/remoteCompileWorker.js', import.meta.url), { workerData: { channel, policies: POLICIES, label, event: EVENT } }),
      );
      const answers = (await Promise.all(workers.map((w) => once(w, 'message')))).map(([m]) => m as { hash: string; cached: unknown; ruleId: string | null });
      await Promise.all(workers.map((w) => w.terminate()));
      const local = await compilePolicies(POLICIES, { label });
      for (const a of answers) assert.deepEqual(a, { hash: local.hash, cached: false, ruleId: 'slack-upload' });
      assert.equal(host.stats.requests, 2);
      assert.equal(host.stats.compiles, 1, 'the same source asked for twice at once is compiled once');
    } finally {
      await host.close();
    }
  });

  it("passes the compiler's refusal back as a PolicyCompileError", async () => {
    const channel = `test-asc-${randomUUID()}`;
    const host = new AscHost(channel, { idleSeconds: 1 });
    try {
      await assert.rejects(remoteAsc(channel)('export function broken(: i32 {'), (err: unknown) => {
        assert.ok(err instanceof PolicyCompileError);
        assert.equal(err.code, 'asc_failed');
        assert.match(err.message, /AssemblyScript could not compile/);
        return true;
      });
    } finally {
      await host.close();
    }
  });

  it('gives up after its timeout when no host answers, with a clear error', async () => {
    await assert.rejects(remoteAsc(`nobody-${randomUUID()}`, 200)('export function f(): i32 { return 1; }'), (err: unknown) => {
      assert.ok(err instanceof PolicyCompileError);
      assert.equal(err.code, 'internal');
      assert.match(err.message, /did not answer within 0.2 s/);
      return true;
    });
  });
});

/**
 * `up` under operator faults: its nats-server killed under traffic, and `up` itself SIGKILLed.
 * (The longer mix, with exact counts and fuzzing, is bin/chaos.test.ts.)
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { SERVER_PID_FILE } from '../core/nats/index.js';
import { processEnded } from '../core/processes.js';
import { startUp, upEnv } from './upHarness.js';

async function serverPid(dataDir: string): Promise<number> {
  return Number((await readFile(join(dataDir, 'nats', SERVER_PID_FILE), 'utf8')).trim());
}

const count = (text: string, re: RegExp): number => (text.match(re) ?? []).length;

describe('up under faults', { concurrency: true }, () => {
  test('nats-server SIGKILLed under traffic: up restarts it, says so, and the simulator and pipeline go on', { timeout: 150_000 }, async () => {
    const { env, dataDir } = await upEnv();
    const up = startUp(['--rate', '3000'], env);
    await up.waitForOutput([/^simulate: [\d,]+ events in /m, /^pipeline: [\d,]+ events\/s .* stored [1-9]/m], 90_000);
    const first = await serverPid(dataDir);
    process.kill(first, 'SIGKILL');
    await up.waitForOutput(
      [new RegExp(`nats-server \\(pid ${first}\\) exited unexpectedly \\(signal SIGKILL\\); restarting it on port \\d+`), /nats-server restarted \(pid \d+\)/],
      30_000,
    );
    assert.notEqual(await serverPid(dataDir), first);
    // After the restart: more progress from the simulator, and the pipeline storing more.
    const progressBefore = count(up.stderr, /^simulate: /gm);
    const storedBefore = Math.max(...[...up.stderr.matchAll(/stored ([\d,]+)/g)].map((m) => Number(m[1]?.replaceAll(',', ''))));
    const deadline = Date.now() + 60_000;
    let storedAfter = storedBefore;
    while (Date.now() < deadline && (count(up.stderr, /^simulate: /gm) < progressBefore + 3 || storedAfter <= storedBefore)) {
      await sleep(250);
      storedAfter = Math.max(...[...up.stderr.matchAll(/stored ([\d,]+)/g)].map((m) => Number(m[1]?.replaceAll(',', ''))));
      assert.equal(up.exit, null, `up exited:\n${up.stderr}`);
    }
    assert.ok(storedAfter > storedBefore, `the pipeline stored more after the restart (${storedBefore} → ${storedAfter})`);
    assert.ok(count(up.stderr, /^simulate: /gm) >= progressBefore + 3, 'the simulator kept publishing');
    assert.doesNotMatch(up.stderr, /simulator stopped|Unhandled|TimeoutError|uncaught/i);
    up.child.kill('SIGINT');
    const exit = await up.waitForExit(60_000);
    assert.deepEqual(exit, { code: 0, signal: null }, up.stderr);
    assert.ok(await processEnded(await serverPid(dataDir).catch(() => -1)));
  });

  test('SIGKILL of up takes its nats-server along; the next up on the same data dir starts cleanly', { timeout: 150_000 }, async () => {
    const { env, dataDir } = await upEnv();
    const first = startUp(['--no-simulator'], env);
    await first.waitForOutput([/^up: ready; no simulator/m], 90_000);
    const server = await serverPid(dataDir);
    // Only up (not its process group): the server must go because its parent did.
    process.kill(first.child.pid ?? -1, 'SIGKILL');
    await first.exited;
    let ended = false;
    for (let i = 0; i < 200 && !ended; i++) {
      ended = await processEnded(server);
      if (!ended) await sleep(25);
    }
    assert.ok(ended, `nats-server ${server} outlived its SIGKILLed up`);

    const second = startUp(['--no-simulator'], env);
    await second.waitForOutput([/^up: ready; no simulator/m], 90_000);
    assert.doesNotMatch(second.stderr, /in use|already in use/);
    const again = await serverPid(dataDir);
    assert.notEqual(again, server);
    second.child.kill('SIGINT');
    assert.deepEqual(await second.waitForExit(60_000), { code: 0, signal: null }, second.stderr);
  });

  test('a second up on a data dir in use is refused with a clear error, and the first is untouched', { timeout: 150_000 }, async () => {
    const { env } = await upEnv();
    const first = startUp(['--no-simulator'], env);
    await first.waitForOutput([/^up: ready; no simulator/m], 90_000);
    const second = startUp(['--no-simulator'], env);
    const exit = await second.waitForExit(30_000);
    assert.equal(exit.code, 1, second.stderr);
    assert.match(second.stderr, /the NATS store .* is in use by process \d+ \(another towerwatch up\?\)/);
    assert.equal(first.exit, null, 'the first up is still running');
    first.child.kill('SIGINT');
    assert.deepEqual(await first.waitForExit(60_000), { code: 0, signal: null }, first.stderr);
  });
});

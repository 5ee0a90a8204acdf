import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { OWNER_PID_FILE, SERVER_PID_FILE } from './storeLock.js';
import { processAlive, processEnded } from '../processes.js';
import { NatsServerError, startNatsServer } from './server.js';

/** A pid that was ours and is gone now. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0']);
  await new Promise((r) => child.once('exit', r));
  return child.pid ?? 999_999;
}

test('a server left on the store by a dead owner is ended before a new one starts; one server per store', async () => {
  const store = await mkdtemp(join(tmpdir(), 'tw-lock-'));
  // A stale server: started directly (no wrapper, own group), its pid file in the store, as an
  // `up` SIGKILLed on a machine without setpriv would leave it.
  const conf = join(store, 'stale.conf');
  await writeFile(conf, JSON.stringify({ host: '127.0.0.1', port: -1, pid_file: join(store, SERVER_PID_FILE), jetstream: { store_dir: store } }));
  const stale = spawn('nats-server', ['-c', conf], { detached: true, stdio: 'ignore' });
  stale.unref();
  try {
    for (let i = 0; i < 200 && !(await readFile(join(store, SERVER_PID_FILE), 'utf8').catch(() => '')); i++) await sleep(25);
    await writeFile(join(store, OWNER_PID_FILE), `${await deadPid()}\n`);
    const server = await startNatsServer({ storeDir: store });
    try {
      assert.equal(server.endedStaleServer, stale.pid);
      assert.equal(processAlive(stale.pid ?? -1), false, 'the stale server is gone');
      assert.equal((await readFile(join(store, OWNER_PID_FILE), 'utf8')).trim(), String(process.pid));
      assert.equal((await readFile(join(store, SERVER_PID_FILE), 'utf8')).trim(), String(server.pid));
    } finally {
      await server.close();
    }
    await assert.rejects(readFile(join(store, OWNER_PID_FILE)), 'the claim is released on stop');
  } finally {
    if (stale.pid !== undefined && processAlive(stale.pid)) process.kill(stale.pid, 'SIGKILL');
    await rm(store, { recursive: true, force: true });
  }
});

test('a store owned by another live process is refused with a clear error', async () => {
  const store = await mkdtemp(join(tmpdir(), 'tw-lock-'));
  const other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
  try {
    await writeFile(join(store, OWNER_PID_FILE), `${other.pid}\n`);
    await assert.rejects(
      startNatsServer({ storeDir: store }),
      (err: unknown) => err instanceof NatsServerError && err.code === 'nats_store_in_use' && err.message.includes(`in use by process ${other.pid}`),
    );
  } finally {
    other.kill('SIGKILL');
    await rm(store, { recursive: true, force: true });
  }
});

test('the server ends with its parent, even when the parent is SIGKILLed', async () => {
  // A parent that starts a server, prints its pid, and waits to be killed.
  const script = `import('${new URL('./server.js', import.meta.url).href}').then(async (m) => { const s = await m.startNatsServer(); process.stdout.write(String(s.pid) + '\\n'); setInterval(() => {}, 1000); });`;
  const parent = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  parent.stdout?.setEncoding('utf8').on('data', (c: string) => (out += c));
  for (let i = 0; i < 400 && !out.includes('\n'); i++) await sleep(25);
  const serverPid = Number(out.trim());
  assert.ok(serverPid > 0 && processAlive(serverPid), `server pid ${out}`);
  parent.kill('SIGKILL');
  let gone = false;
  for (let i = 0; i < 200 && !gone; i++) {
    gone = await processEnded(serverPid);
    if (!gone) await sleep(25);
  }
  assert.ok(gone, 'the server outlived its SIGKILLed parent');
});

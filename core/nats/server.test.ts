import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { connectNats } from './connection.js';
import { findFreePort, NatsServerError, startNatsServer } from './server.js';

test('starts on a free port with JetStream, stops, and deletes its temporary store', async () => {
  const server = await startNatsServer();
  try {
    assert.ok(server.port > 0);
    assert.equal(server.url, `nats://127.0.0.1:${server.port}`);
    assert.ok(server.storeDir !== null && existsSync(server.storeDir));
    const nc = await connectNats(server.url, 'launcher-test');
    try {
      const rtt = await nc.rtt();
      assert.ok(rtt >= 0);
      assert.equal(nc.info?.jetstream, true);
    } finally {
      await nc.close();
    }
  } finally {
    await server.close();
  }
  assert.equal(server.storeDir !== null && existsSync(server.storeDir), false);
  const exit = await server.exited();
  assert.equal(exit.signal ?? 'SIGTERM', 'SIGTERM'); // a graceful exit, not SIGKILL
  await server.close(); // idempotent
});

test('findFreePort picks below the ephemeral range (never a port outgoing connections take), not one to avoid, and free', async () => {
  const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
  const avoid = new Set<number>();
  for (let i = 0; i < 50; i++) {
    const port = await findFreePort('127.0.0.1', avoid);
    assert.ok(port >= 10_000 && port < low, `${port} below ${low}`);
    assert.ok(!avoid.has(port), `${port} was to be avoided`);
    avoid.add(port);
  }
  const port = await findFreePort();
  const srv = createServer();
  await new Promise<void>((resolve, reject) => srv.once('error', reject).listen(port, '127.0.0.1', resolve));
  srv.close();
});

test('await using stops the server; a given store dir is kept', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tw-store-'));
  try {
    const port = await findFreePort();
    let pid: number;
    {
      await using server = await startNatsServer({ port, storeDir: dir });
      assert.equal(server.port, port);
      assert.equal(server.storeDir, dir);
      pid = server.pid;
    }
    assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
    assert.ok(existsSync(join(dir, 'jetstream')), 'caller-owned store dir survives stop');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a port already in use gives a clear error', async () => {
  await using first = await startNatsServer({ jetstream: false });
  await assert.rejects(startNatsServer({ port: first.port, jetstream: false }), (err: unknown) => {
    assert.ok(err instanceof NatsServerError);
    assert.equal(err.code, 'nats_port_in_use');
    assert.equal(err.message, `port ${first.port} is already in use — set TOWERWATCH_NATS_PORT or NATS_URL`);
    return true;
  });
});

test('a missing binary gives an install hint', async () => {
  await assert.rejects(startNatsServer({ env: { PATH: '/nonexistent' } }), (err: unknown) => {
    assert.ok(err instanceof NatsServerError);
    assert.equal(err.code, 'nats_server_not_found');
    assert.equal(err.message, 'nats-server not found on PATH: install it with `apt-get install nats-server`');
    return true;
  });
});

test('an early exit includes the last lines of server output', async () => {
  // An unknown log file directory makes nats-server exit at start-up.
  await assert.rejects(startNatsServer({ jetstream: false, logFile: '/nonexistent/dir/nats.log' }), (err: unknown) => {
    assert.ok(err instanceof NatsServerError);
    assert.equal(err.code, 'nats_server_exited');
    assert.match(err.message, /exited during start-up \(code \d+\); last output:\n.+/s);
    return true;
  });
});

test('logFile receives the server log', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tw-log-'));
  try {
    const logFile = join(dir, 'nats.log');
    const server = await startNatsServer({ jetstream: false, logFile });
    await server.close();
    assert.match(await readFile(logFile, 'utf8'), /Server is ready/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connectNats } from './connection.js';
import { publishWithRetry } from './retry.js';
import { startSupervisedNatsServer } from './supervisor.js';

test('a killed server is started again on the same port and store; clients ride through', async () => {
  const store = await mkdtemp(join(tmpdir(), 'tw-sup-'));
  const lines: string[] = [];
  const server = await startSupervisedNatsServer({ storeDir: store, log: (l) => lines.push(l) });
  const nc = await connectNats(server.url, 'supervisor-test', { reconnectTimeWait: 50, reconnectJitter: 10 });
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'T', subjects: ['t.>'] });
    const js = jetstream(nc, { timeout: 1000 });
    await js.publish('t.1', 'before', { msgID: 'a' });
    const first = server.pid();
    process.kill(first, 'SIGKILL');
    // Published while the server is down: retried until it is back.
    const ack = await publishWithRetry(js, 't.1', 'during', { msgID: 'b' }, { budgetMs: 15_000 });
    assert.equal(ack.seq, 2, 'the store survived the restart');
    assert.notEqual(server.pid(), first);
    assert.equal(server.restarts(), 1);
    assert.ok(
      lines.some((l) => /exited unexpectedly \(signal SIGKILL\); restarting it on port \d+/.test(l)),
      lines.join('\n'),
    );
    assert.equal(new URL(server.url.replace('nats:', 'http:')).port, String(server.port));
  } finally {
    await nc.close();
    await server.close();
    await rm(store, { recursive: true, force: true });
  }
});

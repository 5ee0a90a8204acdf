/**
 * The blocks bucket when the broker is away as the remediator starts: the book keeps trying,
 * and once NATS is back it records and watches blocks (before, one failed open left it
 * merging nothing for the rest of the process's life).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { connectNats, findFreePort, startNatsServer } from '../core/nats/index.js';
import type { RemediationRequest } from '../core/remediation.js';
import { until } from '../core/testing/until.js';
import { BlockBook } from './blockBook.js';

test('a blocks bucket away at start is opened once NATS is back; blocks are then recorded, watched and merged', { timeout: 60_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'towerwatch-blockbook-'));
  const port = await findFreePort('127.0.0.1');
  const lines: string[] = [];
  let book: BlockBook | null = null;
  let server = await startNatsServer({ host: '127.0.0.1', port, storeDir: join(dir, 'store') });
  const nc = await connectNats(server.url, 'block book', { maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  try {
    await server.close();
    book = new BlockBook(nc, { log: (line) => lines.push(line) });
    const req: RemediationRequest = {
      type: 'remediation',
      trigger: 'auto',
      alert_id: 'al_1',
      enterprise_id: 'ent_a',
      device_id: 'dev_1',
      tower_id: 'twr_1',
      carrier: 'att',
      app_id: 'app_1',
      action: 'block_app',
      rule_id: 'r1',
      requested_at: Date.now(),
    };
    // While NATS is away nothing merges: the request is executed.
    assert.equal(await book.mergeInto(req), null);
    await until(() => lines.some((l) => /blocks/.test(l)), 20_000, 'the failed open is logged');

    server = await startNatsServer({ host: '127.0.0.1', port, storeDir: join(dir, 'store') });
    // A request after the broker is back opens the bucket: the block is recorded…
    await until(
      async () => {
        const failures = lines.filter((l) => /could not record/.test(l)).length;
        await book!.record(req, Date.now(), 60_000);
        return lines.filter((l) => /could not record/.test(l)).length === failures;
      },
      30_000,
      'a block recorded once NATS is back',
    );
    // …the watch, which kept trying, sees it…
    await until(() => book!.all().length === 1, 10_000, 'the watch sees the block');
    // …and the next alert for it merges into it.
    const merged = await book.mergeInto({ ...req, alert_id: 'al_2' });
    assert.equal(merged?.device_id, 'dev_1');
    assert.equal(merged?.hits, 2);
  } finally {
    book?.close();
    await nc.close();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
});

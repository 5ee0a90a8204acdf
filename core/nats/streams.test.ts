import assert from 'node:assert/strict';
import { test } from 'node:test';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { headers } from '@nats-io/transport-node';
import {
  discoverySubject,
  DUPLICATE_WINDOW_MS,
  ensureStreams,
  remediationSubject,
  STREAM_LIMITS,
  STREAM_NAMES,
  usageDlqSubject,
  usageSubject,
} from './streams.js';
import { connectNats } from './connection.js';
import { startNatsServer } from './server.js';
import { withNats } from '../testing/natsFixture.js';

const nats = await withNats();

test('subject builders', () => {
  assert.equal(usageSubject('att', 'nyc-001'), 'usage.att.nyc-001');
  assert.equal(discoverySubject('att', 'nyc-001'), 'discovery.att.nyc-001');
  assert.equal(usageDlqSubject('att', 'nyc-001'), 'dlq.usage.att.nyc-001');
  assert.equal(remediationSubject('acme', 'nyc-001'), 'remediation.acme.nyc-001');
  assert.throws(() => usageSubject('att', 'a.b'), /tower must match/);
  assert.throws(() => usageSubject('*', 't'), /carrier must match/);
});

test('ensureStreams creates, is idempotent, and restores a changed config', async () => {
  const nc = await nats.connect();
  const first = await ensureStreams(nc);
  assert.deepEqual(
    first.map((r) => r.action),
    STREAM_NAMES.map(() => 'created'),
  );
  const second = await ensureStreams(nc);
  assert.deepEqual(
    second.map((r) => r.action),
    STREAM_NAMES.map(() => 'unchanged'),
  );

  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info('USAGE');
  assert.deepEqual(info.config.subjects, ['usage.>']);
  assert.equal(info.config.duplicate_window, DUPLICATE_WINDOW_MS * 1e6);
  assert.equal(info.config.storage, 'file');
  assert.equal((await jsm.streams.info('REMEDIATION')).config.retention, 'workqueue');

  // Someone loosened a limit by hand: the next start-up puts it back.
  await jsm.streams.update('DISCOVERY', { ...(await jsm.streams.info('DISCOVERY')).config, max_bytes: 1024 });
  const third = await ensureStreams(jsm);
  assert.deepEqual(third.find((r) => r.name === 'DISCOVERY')?.action, 'updated');
  assert.equal((await jsm.streams.info('DISCOVERY')).config.max_bytes, STREAM_LIMITS.DISCOVERY.maxBytes);
});

test('Nats-Msg-Id deduplicates within the window', async () => {
  const nc = await nats.connect();
  await ensureStreams(nc);
  const js = jetstream(nc);
  const subject = usageSubject('dedup', 'tower-1');
  const publish = (id: string) => {
    const h = headers();
    h.set('Nats-Msg-Id', id);
    return js.publish(subject, new Uint8Array([1, 2, 3]), { headers: h });
  };
  const a = await publish('tower-1:42');
  const b = await publish('tower-1:42');
  const c = await publish('tower-1:43');
  assert.equal(a.duplicate, false);
  assert.equal(b.duplicate, true);
  assert.equal(b.seq, a.seq);
  assert.equal(c.duplicate, false);
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info('USAGE', { subjects_filter: subject });
  assert.equal(info.state.subjects?.[subject], 2);
});

test('concurrent ensureStreams from several processes agree', async () => {
  const [a, b] = await Promise.all([nats.connect('a'), nats.connect('b')]);
  const jsm = await jetstreamManager(a);
  for (const name of STREAM_NAMES) await jsm.streams.delete(name);
  const results = await Promise.all([ensureStreams(a), ensureStreams(b)]);
  for (const r of results) assert.equal(r.length, STREAM_NAMES.length);
  // Exactly one of the two created each stream (or both saw identical configs succeed).
  for (const name of STREAM_NAMES) {
    const actions = results.map((r) => r.find((x) => x.name === name)?.action);
    assert.ok(actions.includes('created'), `${name}: ${actions.join(',')}`);
  }
});

test('a server too small for the stream limits gets a message naming max_file_store', async () => {
  // The one test that needs a server of its own: its JetStream limit is what is under test.
  await using small = await startNatsServer({ maxFileStore: 1024 ** 3 });
  const nc = await connectNats(small.url, 'small');
  try {
    await assert.rejects(ensureStreams(nc), /raise jetstream\.max_file_store/);
  } finally {
    await nc.close();
  }
});

/**
 * towerwatch on a 3-server JetStream cluster (real nats-servers, core/testing/natsCluster.ts):
 * TOWERWATCH_NATS_REPLICAS reaches every stream and KV bucket, no start ever lowers a replica
 * count, and too few servers is a clear error. (The SIGKILL of a stream's leader under traffic
 * is bin/cluster.test.ts.)
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { type KV, Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { AUTH_BUCKET, AuthService, SESSIONS_BUCKET } from '../api/auth.js';
import { CONTROL_BUCKET, ControlPlaneStore, ControlPlaneView, openControlBucket } from '../core/controlPlane/index.js';
import {
  connectNats,
  ensureConsumer,
  ensureStreams,
  kvStreamName,
  isTransientNatsError,
  openKvBucket,
  publishWithRetry,
  raiseReplicas,
  ReplicasUnavailableError,
  STREAM_NAMES,
  streamConfig,
  STREAM_LIMITS,
  USAGE_STREAM,
} from '../core/nats/index.js';
import { type NatsCluster, startNatsCluster } from '../core/testing/natsCluster.js';
import { withNats } from '../core/testing/natsFixture.js';
import { until } from '../core/testing/until.js';
import { retryFor } from '../core/retry.js';
import { seedDemoAccounts } from '../fixtures/accounts.js';
import { consumerWaiting, MessageQueue } from '../pipeline/messageQueue.js';

let cluster: NatsCluster;
let nc: NatsConnection;
let jsm: JetStreamManager;
const single = await withNats();

before(async () => {
  cluster = await startNatsCluster(3);
  // Reconnects for as long as the test runs: members are killed on purpose.
  nc = await connectNats(cluster.url, 'cluster test', { maxReconnectAttempts: -1, reconnectTimeWait: 200 });
  jsm = await jetstreamManager(nc);
});
after(async () => {
  await nc?.close();
  await cluster?.close();
});

const replicasOf = async (stream: string): Promise<number> => (await jsm.streams.info(stream)).config.num_replicas;

test('replicas 3 reach every stream; a later start asking for 1 lowers none of them', async () => {
  const created = await ensureStreams(nc, { replicas: 3 });
  assert.deepEqual(
    created.map((r) => [r.name, r.action, r.replicas]),
    STREAM_NAMES.map((n) => [n, 'created', 3]),
  );
  for (const name of STREAM_NAMES) {
    const info = await jsm.streams.info(name);
    assert.equal(info.config.num_replicas, 3, name);
    assert.equal(info.cluster?.replicas?.length, 2, `${name}: a leader and two followers`);
  }
  const again = await ensureStreams(nc);
  assert.deepEqual(
    again.map((r) => [r.name, r.action, r.replicas]),
    STREAM_NAMES.map((n) => [n, 'unchanged', 3]),
  );
  for (const name of STREAM_NAMES) assert.equal(await replicasOf(name), 3, name);
});

test('a stream that was R1 is raised to 3; 5 on 3 servers is refused with what to do', async () => {
  const name = 'RAISE_ME';
  await jsm.streams.add({ ...streamConfig(STREAM_LIMITS[USAGE_STREAM], 1), name, subjects: ['raise.me'], max_bytes: 1024 ** 2 });
  assert.equal(await replicasOf(name), 1);
  assert.equal(await raiseReplicas(nc, name, 3), 3);
  assert.equal(await replicasOf(name), 3);
  assert.equal(await raiseReplicas(nc, name, 1), 3, 'never lowered');
  await assert.rejects(raiseReplicas(nc, name, 5), (err: unknown) => {
    assert.ok(err instanceof ReplicasUnavailableError, String(err));
    assert.match(err.message, /stream RAISE_ME has 3 replicas and cannot get more with 5 replicas: that needs a JetStream cluster of at least 5 servers/);
    assert.match(err.message, /TOWERWATCH_NATS_REPLICAS/);
    return true;
  });
  assert.equal(await replicasOf(name), 3);
});

test('the control-plane and auth KV buckets get the replicas too, and keep them', async () => {
  // A bucket some earlier start created with one replica…
  await openControlBucket(nc);
  assert.equal(await replicasOf(kvStreamName(CONTROL_BUCKET)), 1);
  // …is raised by a start that asks for 3, and a view opened with defaults leaves it at 3.
  await openControlBucket(nc, { replicas: 3 });
  assert.equal(await replicasOf(kvStreamName(CONTROL_BUCKET)), 3);
  const view = await ControlPlaneView.open(nc);
  try {
    assert.equal(await replicasOf(kvStreamName(CONTROL_BUCKET)), 3);
    const auth = await AuthService.open({ nc, view, secret: null, replicas: 3 });
    auth.close();
    assert.equal(await replicasOf(kvStreamName('towerwatch-auth')), 3);
    assert.equal(await replicasOf(kvStreamName('towerwatch-sessions')), 3);
  } finally {
    await view.close();
  }
});

/** A connection to each member, so a write and the read after it go through different servers. */
const perMember = async (name: string): Promise<NatsConnection[]> => Promise.all(cluster.urls.map((url, i) => connectNats(url, `${name} ${i}`)));

test('a replicated bucket reads what was just written, whichever member is asked', async () => {
  const conns = await perMember('read-after-write');
  try {
    // One bucket as towerwatch creates it; one as an earlier version did (direct gets allowed,
    // so any replica answers a get), opened asking for 3 replicas and, on one member, for 1.
    await new Kvm(nc).create('raw-old', { replicas: 3, history: 1, allow_direct: true });
    for (const bucket of ['raw-new', 'raw-old']) {
      const kvs: KV[] = [];
      for (const [i, c] of conns.entries()) kvs.push(await openKvBucket(c, bucket, { history: 1, replicas: i === 2 ? 1 : 3 }));
      let stale = 0;
      let missing = 0;
      const rounds = 600;
      for (let i = 0; i < rounds; i++) {
        await kvs[i % 3]!.put('k', String(i));
        const read = await kvs[(i + 1) % 3]!.get('k');
        if (read?.string() !== String(i)) stale++;
        if (i % 10 === 0) {
          await kvs[i % 3]!.create(`new.${i}`, 'x');
          if ((await kvs[(i + 2) % 3]!.get(`new.${i}`)) === null) missing++;
        }
      }
      assert.deepEqual({ bucket, stale, missing }, { bucket, stale: 0, missing: 0 }, `${rounds} writes, each read back through another member`);
    }
  } finally {
    await Promise.all(conns.map((c) => c.close()));
  }
});

test('processes opening one new replicated bucket at the same moment all get it', async () => {
  const conns = await perMember('open together');
  try {
    for (let round = 0; round < 6; round++) {
      const bucket = `together-${round}`;
      const opened = await Promise.allSettled(conns.map((c) => openKvBucket(c, bucket, { history: 1, replicas: 3, timeoutMs: 2_000 })));
      assert.deepEqual(
        opened.map((o) => (o.status === 'fulfilled' ? 'opened' : String(o.reason))),
        ['opened', 'opened', 'opened'],
        `${bucket}: a create that loses the race is retried, not a failed start`,
      );
      const kvs = opened.map((o) => (o as PromiseFulfilledResult<KV>).value);
      await kvs[0]!.put('k', 'v');
      assert.equal((await kvs[2]!.get('k'))?.string(), 'v');
    }
  } finally {
    await Promise.all(conns.map((c) => c.close()));
  }
});

test('api nodes starting together share one signing key, and refresh tokens rotate across them', async () => {
  // Fresh buckets: the nodes race to create the key, as a new deployment's first start does.
  for (const bucket of [AUTH_BUCKET, SESSIONS_BUCKET]) await jsm.streams.delete(kvStreamName(bucket)).catch(() => undefined);
  await seedDemoAccounts(await ControlPlaneStore.open(nc, { replicas: 3 }), 'cluster-password-1');
  const conns = await perMember('auth');
  const views = await Promise.all(conns.map((c) => ControlPlaneView.open(c)));
  const nodes = await Promise.all(conns.map((c, i) => AuthService.open({ nc: c, view: views[i]!, secret: null, replicas: 3 })));
  try {
    let pair = await nodes[0]!.login('admin@acme', 'cluster-password-1');
    for (const node of nodes) assert.equal((await node.verifyAccessToken(pair.access_token)).account.username, 'admin@acme');
    // Each refresh reads the family another node rotated a moment before: a stale read would
    // look like reuse and revoke the session.
    for (let i = 1; i <= 60; i++) {
      pair = await nodes[i % 3]!.refresh(pair.refresh_token);
      await nodes[(i + 1) % 3]!.verifyAccessToken(pair.access_token);
    }
  } finally {
    for (const node of nodes) node.close();
    await Promise.all(views.map((v) => v.close()));
    await Promise.all(conns.map((c) => c.close()));
  }
});

test('on one server, replicas 3 is a clear error, not a hang or a silent R1', async () => {
  const one = await single.connect('single server');
  await assert.rejects(ensureStreams(one, { replicas: 3 }), (err: unknown) => {
    assert.ok(err instanceof ReplicasUnavailableError, String(err));
    assert.match(err.message, /^stream USAGE cannot be created with 3 replicas: that needs a JetStream cluster of at least 3 servers/);
    return true;
  });
  await assert.rejects(openControlBucket(one, { replicas: 3 }), ReplicasUnavailableError);
});

test('a signing key that cannot be had stops the start with a clear error, after a bounded wait', async () => {
  const one = await single.connect('no key');
  const auth = await openKvBucket(one, AUTH_BUCKET, { history: 1 });
  await auth.put('jwt-secret', ''); // a broken key: neither created anew nor usable
  const view = await ControlPlaneView.open(one);
  try {
    const started = Date.now();
    await assert.rejects(
      AuthService.open({ nc: one, view, secret: null, secretWaitMs: 300 }),
      /^RetryBudgetExhaustedError: KV towerwatch-auth\/jwt-secret: no signing key: gave up after \d+ attempts in 0\.\d s: another node holds the key/,
    );
    assert.ok(Date.now() - started < 5_000, 'the wait is bounded');
  } finally {
    await view.close();
    await auth.delete('jwt-secret');
  }
});

test('on one server, raising an existing stream or bucket to 3 replicas is the same clear error, not a silent R1', async () => {
  const one = await single.connect('single server, existing');
  await ensureStreams(one);
  await assert.rejects(ensureStreams(one, { replicas: 3 }), (err: unknown) => {
    assert.ok(err instanceof ReplicasUnavailableError, String(err));
    assert.match(err.message, /^stream USAGE has 1 replica and cannot get more with 3 replicas: .*not part of a JetStream cluster/);
    return true;
  });
  await openControlBucket(one);
  await assert.rejects(openControlBucket(one, { replicas: 3 }), ReplicasUnavailableError);
  const ojsm = await jetstreamManager(one);
  for (const stream of [USAGE_STREAM, kvStreamName(CONTROL_BUCKET)]) assert.equal((await ojsm.streams.info(stream)).config.num_replicas, 1, stream);
});

test("a pull lost with its consumer's leader is made again within seconds, not after the client's 30 s of missed heartbeats", { timeout: 90_000 }, async () => {
  // A new R3 stream answers once its group has a leader; until then requests may time out.
  await retryFor('creating PULLS', () => jsm.streams.add({ name: 'PULLS', subjects: ['pulls.>'], num_replicas: 3 }), { retryable: isTransientNatsError });
  await retryFor('creating its consumer', () => ensureConsumer(nc, 'PULLS', 'p', { ackWaitMs: 30_000, maxAckPending: 1_000 }), {
    retryable: isTransientNatsError,
  });
  let leaderName: string | undefined;
  await until(async () => (leaderName = (await jsm.consumers.info('PULLS', 'p').catch(() => null))?.cluster?.leader) !== undefined, 30_000, 'the consumer led');
  const leader = cluster.names.indexOf(leaderName ?? '');
  assert.ok(leader >= 0, `the consumer's leader (${String(leaderName)})`);
  // The queue's connection stays up through the kill: only the server's state is lost.
  const qc = await connectNats(cluster.urls[(leader + 1) % 3]!, 'pull queue', { maxReconnectAttempts: -1, reconnectTimeWait: 200 });
  const js = jetstream(qc);
  const consumer = await js.consumers.get('PULLS', 'p');
  const renewed: number[] = [];
  const queue = new MessageQueue(
    () => consumer.consume({ max_messages: 100, expires: 30_000 }),
    200,
    () => undefined,
    {
      afterMs: 1_000,
      waiting: consumerWaiting(consumer),
      onRenew: (n) => renewed.push(n),
    },
  );
  const take = async (n: number, withinMs: number): Promise<number> => {
    const started = performance.now();
    let got = 0;
    while (got < n && performance.now() - started < withinMs) {
      for (const m of await queue.take(n - got, 0, () => false)) {
        m.ack();
        got++;
      }
    }
    return got;
  };
  try {
    for (let i = 0; i < 5; i++) await publishWithRetry(js, `pulls.${i}`, 'x', {});
    assert.equal(await take(5, 10_000), 5, 'delivered before the kill');
    const jsm2 = await jetstreamManager(qc);
    await cluster.kill(leader);
    await until(
      async () => {
        const now = (await jsm2.consumers.info('PULLS', 'p').catch(() => null))?.cluster?.leader;
        return now !== undefined && now !== leaderName;
      },
      30_000,
      'a new consumer leader',
    );
    for (let i = 0; i < 5; i++) await publishWithRetry(js, `pulls.after.${i}`, 'x', {});
    const t0 = performance.now();
    assert.equal(await take(5, 15_000), 5, `delivered after the kill within 15 s (renewed: ${renewed.join(', ') || 'never'})`);
    assert.ok(renewed.length >= 1, 'through a new pull');
    process.stdout.write(`# the 5 messages after the kill came in ${Math.round(performance.now() - t0)} ms\n`);
  } finally {
    await queue.close();
    await qc.close();
    await cluster.restart(leader);
  }
});

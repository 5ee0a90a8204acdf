/**
 * towerwatch on a 3-server JetStream cluster (real nats-servers, core/testing/natsCluster.ts):
 * TOWERWATCH_NATS_REPLICAS reaches every stream and KV bucket, no start ever lowers a replica
 * count, and too few servers is a clear error. (The SIGKILL of a stream's leader under traffic
 * is bin/cluster.test.ts.)
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { AuthService } from '../api/auth.js';
import { CONTROL_BUCKET, ControlPlaneView, openControlBucket } from '../core/controlPlane/index.js';
import {
  connectNats,
  ensureStreams,
  kvStreamName,
  raiseReplicas,
  ReplicasUnavailableError,
  STREAM_NAMES,
  streamConfig,
  STREAM_LIMITS,
  USAGE_STREAM,
} from '../core/nats/index.js';
import { type NatsCluster, startNatsCluster } from '../core/testing/natsCluster.js';
import { withNats } from '../core/testing/natsFixture.js';

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

test('on one server, replicas 3 is a clear error, not a hang or a silent R1', async () => {
  const one = await single.connect('single server');
  await assert.rejects(ensureStreams(one, { replicas: 3 }), (err: unknown) => {
    assert.ok(err instanceof ReplicasUnavailableError, String(err));
    assert.match(err.message, /^stream USAGE cannot be created with 3 replicas: that needs a JetStream cluster of at least 3 servers/);
    return true;
  });
  await assert.rejects(openControlBucket(one, { replicas: 3 }), ReplicasUnavailableError);
});

/**
 * towerwatch scaled out on this machine: a 3-server JetStream cluster with every stream and
 * bucket R3 (TOWERWATCH_NATS_REPLICAS=3), two `towerwatch pipeline` processes sharing the
 * consumer, two api nodes, and ClickHouse over HTTP in cluster mode
 * (TOWERWATCH_CLICKHOUSE_CLUSTER: rows written and read through the Distributed `*_all` tables;
 * the stand-in of core/testing/clickhouseStandIn.ts makes one real engine a one-shard cluster
 * behind ClickHouse's protocol). Mid-run the USAGE stream's leader and one pipeline are
 * SIGKILLed; afterwards every count is exact.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import WebSocket from 'ws';
import { startApiServer, type ApiServer } from '../api/server.js';
import { callApi } from '../api/testing/apiFixture.js';
import { openClickHouse } from '../core/clickhouse/index.js';
import { ControlPlaneStore } from '../core/controlPlane/index.js';
import { connectNats, ensureStreams, USAGE_STREAM } from '../core/nats/index.js';
import { startClickHouseStandIn } from '../core/testing/clickhouseStandIn.js';
import { startNatsCluster } from '../core/testing/natsCluster.js';
import { killAllPipelines, PipelineProcess } from '../core/testing/pipelineProcess.js';
import { projectionTotalQuery } from '../core/testing/rollups.js';
import { until } from '../core/testing/until.js';
import { seedDemoAccounts } from '../fixtures/accounts.js';
import { publishTraffic } from '../fixtures/publisher.js';
import { seedWorld } from '../fixtures/seed.js';
import { TowerAgent } from '../fixtures/towerAgent.js';
import { createTrafficGenerator } from '../fixtures/traffic.js';
import { generateWorld } from '../fixtures/world.js';
import { createWorldClassifier } from '../fixtures/worldPolicies.js';
import { DEFAULT_CONSUMER } from '../pipeline/pipeline.js';

const PASSWORD = 'cluster-password-1';
const EVENTS = 24_000;
const CH_CLUSTER = 'tw';
/** The data tables as statements name them. */
const DATA_TABLE = /\btowerwatch\.(app_usage|violations|remedial_actions|discovery_sightings|dead_letters)(_all)?\b/g;
const cleanups: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  await killAllPipelines();
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
});

const reconnecting = (url: string, name: string): Promise<NatsConnection> => connectNats(url, name, { maxReconnectAttempts: -1, reconnectTimeWait: 200 });

test('3 NATS servers (R3), 2 pipelines, 2 api nodes: SIGKILL of the USAGE leader and a pipeline mid-run, counts exact', { timeout: 240_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'towerwatch-cluster-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const cluster = await startNatsCluster(3);
  cleanups.push(() => cluster.close());
  const standIn = await startClickHouseStandIn({ dataDir: join(dir, 'clickhouse'), user: 'towerwatch', password: 'cluster', cluster: CH_CLUSTER });
  cleanups.push(() => standIn.close());
  const nc = await reconnecting(cluster.url, 'cluster test');
  cleanups.push(() => nc.close());
  const jsm = await jetstreamManager(nc);

  await ensureStreams(nc, { replicas: 3 });
  const store = await ControlPlaneStore.open(nc, { replicas: 3 });
  const world = generateWorld({ seed: 17, enterprises: 3, usersPerEnterprise: 10, towers: 6 });
  await seedWorld(store, world);
  await seedDemoAccounts(store, PASSWORD);
  const classifier = await createWorldClassifier(world, { cacheDir: join(dir, 'wasm-cache') });
  const towers = TowerAgent.start({ nc });
  cleanups.push(() => towers.close());

  const pipelines = ['A', 'B'].map(
    (name) =>
      new PipelineProcess(`pipeline ${name}`, {
        natsUrl: cluster.url,
        dataDir: join(dir, name),
        clickhouseUrl: standIn.url,
        env: { TOWERWATCH_NATS_REPLICAS: '3', TOWERWATCH_CLICKHOUSE_CLUSTER: CH_CLUSTER },
        args: ['--ack-wait-seconds', '3', '--threads', '1'],
      }),
  );
  await Promise.all(pipelines.map((p) => p.ready(90_000)));

  const api: ApiServer[] = [];
  for (const name of ['a', 'b']) {
    // Closed even when the start fails: a connection left reconnecting would keep this file's process alive.
    const conn = await reconnecting(cluster.url, `api ${name}`);
    cleanups.push(() => conn.close());
    const clickhouse = await openClickHouse({ clickhouseUrl: standIn.url, dataDir: dir, cluster: CH_CLUSTER });
    cleanups.push(() => clickhouse.close());
    const server = await startApiServer({
      nc: conn,
      clickhouse,
      port: 0,
      jwtSecret: null, // the signing key is shared through KV: a token of one node works on the other
      natsReplicas: 3,
      limits: { perAccountPerMinute: 100_000, loginAttemptsPerAddress: 10_000 },
      log: () => undefined,
    });
    api.push(server);
    cleanups.push(() => server.close());
  }
  const [a, b] = api as [ApiServer, ApiServer];
  const login = await callApi(a.url, 'POST', '/auth/login', { body: { username: 'admin@acme', password: PASSWORD } });
  assert.equal(login.status, 200, login.text);
  const token = login.json.access_token as string;
  assert.equal((await callApi(b.url, 'GET', '/towers', { token })).status, 200, 'a token of node a is valid on node b');

  // One dashboard socket per api node.
  const alertsSeen = [0, 0];
  for (const [i, server] of api.entries()) {
    const ws = new WebSocket(`${server.url.replace('http', 'ws')}/ws/alerts?token=${token}`);
    ws.on('message', (data: Buffer) => {
      const m = JSON.parse(data.toString()) as { type: string; alerts?: unknown[] };
      if (m.type === 'alert') alertsSeen[i]!++;
      else if (m.type === 'alerts') alertsSeen[i]! += m.alerts?.length ?? 0;
    });
    cleanups.push(() => ws.close());
  }

  // Traffic through the cluster; a third of the way in the USAGE leader dies, half-way pipeline A.
  const kills: Array<Promise<unknown>> = [];
  let killedLeader = -1;
  const published = await publishTraffic({
    js: jetstream(nc, { timeout: 2_000 }),
    world,
    generator: createTrafficGenerator(world, { seed: 17, classify: classifier.classify, startTs: Date.now() - 60_000 }),
    classify: classifier.classify,
    events: EVENTS,
    rate: 4_000,
    frameSize: 500,
    discoveryPerThousand: 2,
    retryBudgetMs: 30_000,
    progressEveryMs: 100,
    onProgress: (p) => {
      if (kills.length === 0 && p.events >= EVENTS / 3) {
        kills.push(
          cluster.streamLeader(nc, USAGE_STREAM).then(async (leader) => {
            killedLeader = leader;
            await cluster.kill(leader);
          }),
        );
      } else if (kills.length === 1 && p.events >= EVENTS / 2) {
        kills.push(pipelines[0]!.kill('SIGKILL'));
      }
    },
  });
  await Promise.all(kills);
  assert.ok(killedLeader >= 0, 'the USAGE leader was killed');
  assert.equal(pipelines[0]!.exit?.signal, 'SIGKILL');
  t.diagnostic(
    `published ${published.events} events in ${published.frames} frames, ${published.retries} publishes retried; killed ${cluster.names[killedLeader]}`,
  );

  // No publish lost: every frame is in the stream once, under a new leader.
  assert.equal(published.events, EVENTS);
  assert.ok(published.retries > 0, 'publishes failed while USAGE had no leader, and were retried');
  assert.equal((await jsm.streams.info(USAGE_STREAM)).state.messages, published.frames);
  assert.notEqual(await cluster.streamLeader(nc, USAGE_STREAM), killedLeader);

  // Pipeline B takes over what A had in hand, and drains the stream.
  const lastSeq = (await jsm.streams.info(USAGE_STREAM)).state.last_seq;
  await until(
    async () => {
      if (pipelines[1]!.exit !== null) assert.fail(`pipeline B exited:\n${pipelines[1]!.output}`);
      const c = await jsm.consumers.info(USAGE_STREAM, DEFAULT_CONSUMER).catch(() => null);
      return c !== null && c.num_pending === 0 && c.num_ack_pending === 0 && c.ack_floor.stream_seq >= lastSeq;
    },
    120_000,
    'the consumer drained by pipeline B',
  );

  const db = standIn.engine.database;
  const one = async (query: string): Promise<Record<string, number>> =>
    ((await (await standIn.engine.client.query({ query, format: 'JSONEachRow' })).json<Record<string, string>>())[0] ?? {}) as unknown as Record<
      string,
      number
    >;
  // An event is its (carrier, tower, event_id); a message its stream sequence.
  const usage = await one(
    `SELECT toUInt64(count()) AS n, toUInt64(uniqExact(carrier, tower_id, event_id)) AS d, toUInt64(uniqExact(stream_seq)) AS m FROM ${db}.app_usage`,
  );
  assert.deepEqual([Number(usage['n']), Number(usage['d']), Number(usage['m'])], [EVENTS, EVENTS, published.frames], 'stored == published == distinct');
  const alertIds = await one(`SELECT toUInt64(count()) AS n, toUInt64(uniqExact(alert_id)) AS d FROM ${db}.violations`);
  assert.equal(Number(alertIds['n']), Number(alertIds['d']), 'one violation row per alert');
  const violations = Number((await one(`SELECT toUInt64(count()) AS n FROM ${db}.violations`))['n']);
  assert.equal(violations, published.expectedViolations);
  for (const [table, projection, want] of [
    ['app_usage', 'per_minute', EVENTS],
    ['app_usage', 'per_hour', EVENTS],
    ['violations', 'per_minute', violations],
    ['violations', 'per_hour', violations],
  ] as const) {
    assert.equal(Number((await one(projectionTotalQuery(table, projection, db)))['n']), want, `${table}.${projection} total`);
  }
  assert.equal(Number((await one(`SELECT toUInt64(count()) AS n FROM ${db}.dead_letters`))['n']), 0);
  assert.ok(published.discoveryReports > 0);
  await until(async () => Number((await one(`SELECT toUInt64(count()) AS n FROM ${db}.discovery_sightings`))['n']) > 0, 30_000, 'sightings stored');

  // Both dashboards heard alerts; a remediation asked on one node is carried out and listed on the other.
  await until(() => alertsSeen[0]! > 0 && alertsSeen[1]! > 0, 30_000, `alerts on both sockets (${alertsSeen.join(', ')})`);
  const alerts = await callApi(b.url, 'GET', '/dashboard/alerts?range=24h&limit=1', { token });
  assert.equal(alerts.status, 200, alerts.text);
  const alertId = (alerts.json.alerts as Array<{ alert_id: string }>)[0]?.alert_id ?? assert.fail('no alert listed');
  const asked = await callApi(a.url, 'POST', '/remedial-actions', { token, body: { alert_id: alertId, action: 'block_device' } });
  assert.equal(asked.status, 202, asked.text);
  // A pull request pipeline A left at the server can take the command's message; it then comes
  // to B after the remediation consumer's ack_wait (30 s).
  let listed: unknown = null;
  const askedAt = performance.now();
  await until(
    async () => {
      const r = await callApi(b.url, 'GET', '/remedial-actions', { token });
      listed = r.json;
      return (r.json.remedial_actions as Array<{ action_id: string; status: string }>).some(
        (x) => x.action_id === asked.json.action_id && x.status === 'success',
      );
    },
    120_000,
    'the remedial action carried out, listed on node b',
  ).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\nasked: ${asked.text}\nlisted: ${JSON.stringify(listed)}\npipeline B:\n${pipelines[1]!.output.slice(-3000)}`);
  });

  t.diagnostic(`remedial action carried out and listed ${Math.round(performance.now() - askedAt)} ms after it was asked`);

  // Every row went in, and every data-table read (the stored-seq lookups of the pipelines, the
  // api's history) came out, through a Distributed table.
  const local = new Set<string>();
  let distributed = 0;
  for (const r of standIn.requests) {
    // DDL names the local tables, on every node (the TTL by plan: retentionKeeper.ts).
    if (/^\s*ALTER TABLE \S+ ON CLUSTER /.test(r.statement)) continue;
    for (const [, table, all] of r.statement.matchAll(DATA_TABLE)) {
      if (all === undefined) local.add(`${table}: ${r.statement.slice(0, 100)}`);
      else distributed++;
    }
  }
  assert.deepEqual([...local], [], 'no statement names a local data table');
  assert.ok(
    standIn.requests.some((r) => /^\s*ALTER TABLE \S+\.app_usage ON CLUSTER '[^']*' MODIFY TTL .* WHERE enterprise_id IN /.test(r.statement)),
    // (the stand-in, without Keeper, refuses it as such a server would; the keeper retries)
    'the TTL by plan was sent ON CLUSTER',
  );
  for (const table of ['app_usage_all', 'violations_all', 'discovery_sightings_all', 'remedial_actions_all']) assert.ok(standIn.inserts(table) > 0, table);
  assert.ok(distributed > 0);

  // The killed server comes back and catches up; pipeline B stops cleanly.
  await cluster.restart(killedLeader);
  const exit = await pipelines[1]!.kill('SIGTERM');
  assert.deepEqual(exit, { code: 0, signal: null }, pipelines[1]!.output);
  await sleep(0);
});

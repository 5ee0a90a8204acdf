/**
 * The pipeline service's /healthz, /readyz and /metrics against real parts: a real
 * nats-server (stopped and restarted on the same port and store mid-file), embedded
 * ClickHouse, the real pipeline service with its worker thread.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { Gauge } from 'prom-client';
import { ControlPlaneStore } from '../core/controlPlane/index.js';
import { connectNats, ensureStreams, type NatsServerHandle, startNatsServer, usageSubject } from '../core/nats/index.js';
import { until } from '../core/testing/until.js';
import { briefEvent, publishFrame } from '../fixtures/briefEvents.js';
import { seedWorld } from '../fixtures/seed.js';
import { BRIEF, generateWorld } from '../fixtures/world.js';
import { bearerMatches, isLoopbackAddress } from '../core/metricsAccess.js';
import { HealthServer, HealthServerListenError } from './healthServer.js';
import { PipelineMetrics } from './pipelineMetrics.js';
import { startPipelineService, type PipelineService } from './service.js';

const TOKEN = 'test-metrics-token-0123456789';

/** `name value` of an unlabelled sample in Prometheus text; undefined when absent. */
function sample(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m?.[1] === undefined ? undefined : Number(m[1]);
}

async function get(url: string, init: RequestInit = {}): Promise<{ status: number; headers: Headers; text: string; json: () => any }> {
  const res = await fetch(url, init);
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) };
}

describe('pipeline health and metrics server', () => {
  let storeDir: string;
  let dataDir: string;
  let server: NatsServerHandle;
  let port: number;
  let nc: NatsConnection;
  let pub: NatsConnection;
  let js: JetStreamClient;
  let service: PipelineService;
  let base: string;
  const logs: string[] = [];
  const metrics = async (): Promise<string> => {
    const r = await get(`${base}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(r.status, 200, r.text);
    return r.text;
  };

  before(async () => {
    storeDir = await mkdtemp(join(tmpdir(), 'tw-health-nats-'));
    dataDir = await mkdtemp(join(tmpdir(), 'tw-health-data-'));
    server = await startNatsServer({ storeDir });
    port = server.port;
    // The service's connection reconnects for ever (as in production); the publisher's too.
    nc = await connectNats(server.url, 'health test pipeline', { reconnectTimeWait: 250, reconnectJitter: 0 });
    pub = await connectNats(server.url, 'health test publisher', { reconnectTimeWait: 250, reconnectJitter: 0 });
    js = jetstream(pub);
    await ensureStreams(pub);
    await seedWorld(await ControlPlaneStore.open(pub), generateWorld({ seed: 21, enterprises: 2, usersPerEnterprise: 4, towers: 4 }));
    service = await startPipelineService({
      config: { clickhouseUrl: null, dataDir, retentionDays: 30, pipelinePort: 0, pipelineHost: '127.0.0.1', metricsToken: TOKEN },
      nc,
      natsUrl: server.url,
      log: (line) => void logs.push(line),
      statusEverySeconds: 0,
      pipeline: { threads: 1 },
      // No tower answers commands here: the remediator would spend the file waiting on them.
      remediator: false,
    });
    assert.ok(service.health);
    base = service.health.url;
  });

  after(async () => {
    await service?.close();
    await Promise.allSettled([nc?.close(), pub?.close()]);
    await server?.close();
    await rm(storeDir, { recursive: true, force: true });
    await rm(dataDir, { recursive: true, force: true });
  });

  it('logs its address; /healthz answers 200; /readyz becomes 200 with every check true', async () => {
    assert.ok(logs.includes(`pipeline: health and metrics on ${base} (/healthz /readyz /metrics)`), logs.join('\n'));
    assert.match(base, /^http:\/\/127\.0\.0\.1:\d+$/);
    const h = await get(`${base}/healthz`);
    assert.equal(h.status, 200);
    assert.deepEqual(h.json(), { status: 'ok' });
    await service.pipeline.ready();
    let r = await get(`${base}/readyz`);
    await until(async () => (r = await get(`${base}/readyz`)).status === 200, 20_000, '/readyz 200');
    assert.deepEqual(r.json(), { status: 'ready', checks: { nats: true, clickhouse: true, workers: true, loop: true } });
  });

  it('/metrics needs the bearer token when one is set: 401 without or with a wrong one, 200 with it', async () => {
    const none = await get(`${base}/metrics`);
    assert.equal(none.status, 401);
    assert.equal(none.json().error.code, 'unauthorized');
    assert.match(none.headers.get('www-authenticate') ?? '', /^Bearer/);
    assert.ok(!none.text.includes(TOKEN));
    for (const authorization of [`Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(0, -1)}`, `Basic ${TOKEN}`, TOKEN, 'Bearer ']) {
      const wrong = await get(`${base}/metrics`, { headers: { authorization } });
      assert.equal(wrong.status, 401, authorization);
    }
    const ok = await get(`${base}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(ok.status, 200);
    assert.match(ok.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    for (const name of [
      'towerwatch_pipeline_events_total',
      'towerwatch_pipeline_consumer_lag_messages',
      'towerwatch_pipeline_worker_exits_total',
      'towerwatch_pipeline_nats_reconnects_total',
      'towerwatch_discovery_sightings_total',
      'towerwatch_remediation_executed_total',
      'towerwatch_pipeline_process_cpu_seconds_total',
    ]) {
      assert.match(ok.text, new RegExp(`^# TYPE ${name} `, 'm'), name);
    }
    // /healthz and /readyz need no token.
    assert.equal((await get(`${base}/healthz`)).status, 200);
  });

  it('counters match what was published: events, frames, violations, stored rows, dead letters; the lag drains to 0', async () => {
    const before = await metrics();
    const events0 = sample(before, 'towerwatch_pipeline_events_total') ?? assert.fail('no events counter');
    const frames = 5;
    const perFrame = 40;
    for (let f = 0; f < frames; f++) {
      // John Doe's Slack upload: denied by Acme's Admin Policy, so every event is a violation.
      await publishFrame(
        js,
        'att',
        BRIEF.nycTower,
        Array.from({ length: perFrame }, (_, i) => briefEvent(10_000 + f * perFrame + i)),
      );
    }
    await js.publish(usageSubject('att', BRIEF.nycTower), new Uint8Array([0xc1, 0xc1, 0xc1]));
    let text = before;
    await until(
      async () =>
        sample((text = await metrics()), 'towerwatch_pipeline_dlq_messages_total') === 1 &&
        sample(text, 'towerwatch_pipeline_events_total') === events0 + frames * perFrame,
      30_000,
      'events counted',
    );
    const c = service.pipeline.counters;
    assert.equal(sample(text, 'towerwatch_pipeline_events_total'), frames * perFrame);
    assert.equal(sample(text, 'towerwatch_pipeline_violations_total'), frames * perFrame);
    assert.equal(sample(text, 'towerwatch_pipeline_messages_total'), frames + 1);
    assert.equal(sample(text, 'towerwatch_pipeline_fetched_messages_total'), c.fetched);
    assert.equal(sample(text, 'towerwatch_pipeline_batches_total'), c.batches);
    assert.ok(c.batches >= 1);
    const rs = await service.clickhouse.client.query({ query: 'SELECT count() AS n FROM app_usage', format: 'JSONEachRow' });
    const stored = Number((await rs.json<{ n: string }>())[0]?.n);
    assert.equal(stored, frames * perFrame);
    assert.equal(sample(text, 'towerwatch_pipeline_stored_rows_total'), stored);
    assert.ok((sample(text, 'towerwatch_pipeline_dead_letters_total') ?? 0) >= 1);
    assert.ok((sample(text, 'towerwatch_pipeline_insert_seconds_total') ?? 0) > 0);
    assert.ok((sample(text, 'towerwatch_pipeline_stored_lookup_seconds_total') ?? 0) > 0, 'the redelivery lookups are timed');
    assert.equal(sample(text, 'towerwatch_pipeline_worker_threads'), 1);
    assert.equal(sample(text, 'towerwatch_pipeline_nats_connected'), 1);
    assert.ok((sample(text, 'towerwatch_pipeline_policies') ?? 0) >= 1);
    // Acked → the consumer's lag (read from JetStream at scrape time, cached ~1 s) drains.
    await until(async () => sample(await metrics(), 'towerwatch_pipeline_consumer_lag_messages') === 0, 10_000, 'lag 0');
  });

  it('a worker thread that dies is counted and replaced; readiness and processing come back', async () => {
    const [worker] = service.pipeline.workerThreads();
    assert.ok(worker);
    await worker.terminate();
    let text = '';
    await until(async () => sample((text = await metrics()), 'towerwatch_pipeline_worker_exits_total') === 1, 10_000, 'worker exit counted');
    await until(async () => sample((text = await metrics()), 'towerwatch_pipeline_worker_threads') === 1, 10_000, 'worker replaced');
    assert.notEqual(service.pipeline.workerThreads()[0], worker);
    await until(async () => (await get(`${base}/readyz`)).status === 200, 10_000, '/readyz 200');
    const events0 = sample(text, 'towerwatch_pipeline_events_total') ?? 0;
    await publishFrame(
      js,
      'att',
      BRIEF.nycTower,
      Array.from({ length: 10 }, (_, i) => briefEvent(20_000 + i)),
    );
    await until(async () => sample(await metrics(), 'towerwatch_pipeline_events_total') === events0 + 10, 30_000, 'events after the restart');
  });

  it('unknown paths 404, other methods 405, both with the error envelope; a failing handler answers 500 and the server goes on', async () => {
    const nf = await get(`${base}/nope?x=1`);
    assert.equal(nf.status, 404);
    assert.deepEqual(nf.json(), { error: { code: 'not_found', message: 'no such path', details: { paths: ['/healthz', '/readyz', '/metrics'] } } });
    for (const path of ['/metrics', '/healthz', '/readyz']) {
      const na = await get(`${base}${path}`, { method: 'POST', body: '{"x":1}' });
      assert.equal(na.status, 405, path);
      assert.equal(na.headers.get('allow'), 'GET, HEAD');
      assert.equal(na.json().error.code, 'method_not_allowed');
      assert.deepEqual(na.json().error.details, { allowed: ['GET', 'HEAD'] });
    }
    // A real collector that throws, in the real registry.
    new Gauge({
      name: 'towerwatch_test_broken',
      help: 'throws',
      registers: [service.metrics.registry],
      collect() {
        throw new Error('collector exploded');
      },
    });
    const logged = logs.length;
    const failed = await get(`${base}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(failed.status, 500);
    assert.deepEqual(failed.json(), { error: { code: 'internal', message: 'internal error; see the pipeline log', details: null } });
    assert.ok(
      logs.slice(logged).some((l) => /GET \/metrics failed: Error: collector exploded/.test(l)),
      logs.slice(logged).join('\n'),
    );
    service.metrics.registry.removeSingleMetric('towerwatch_test_broken');
    assert.equal((await get(`${base}/healthz`)).status, 200);
    assert.equal((await get(`${base}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).status, 200);
  });

  it('/readyz is 503 naming nats while nats-server is down, and 200 again after it restarts on the same port and store', async () => {
    const before = await metrics();
    const disconnects0 = sample(before, 'towerwatch_pipeline_nats_disconnects_total') ?? 0;
    const reconnects0 = sample(before, 'towerwatch_pipeline_nats_reconnects_total') ?? 0;
    await server.close();
    let r = await get(`${base}/readyz`);
    await until(async () => (r = await get(`${base}/readyz`)).status === 503, 10_000, '/readyz 503');
    const body = r.json();
    assert.equal(body.status, 'not_ready');
    assert.equal(body.checks.nats, false);
    assert.equal(body.checks.clickhouse, true);
    assert.equal(body.checks.workers, true);
    assert.equal(body.checks.loop, true);
    assert.match(body.reasons.nats, /not connected/);
    // Liveness is not readiness: the process is fine, NATS is not.
    assert.equal((await get(`${base}/healthz`)).status, 200);
    const down = await metrics();
    assert.equal(sample(down, 'towerwatch_pipeline_nats_connected'), 0);
    assert.equal(sample(down, 'towerwatch_pipeline_nats_disconnects_total'), disconnects0 + 1);
    await until(async () => Number.isNaN(sample(await metrics(), 'towerwatch_pipeline_consumer_lag_messages')), 5_000, 'lag unknown while NATS is down');

    server = await startNatsServer({ port, storeDir });
    await until(async () => (r = await get(`${base}/readyz`)).status === 200, 20_000, '/readyz 200 again');
    const up = await metrics();
    assert.equal(sample(up, 'towerwatch_pipeline_nats_connected'), 1);
    assert.equal(sample(up, 'towerwatch_pipeline_nats_reconnects_total'), reconnects0 + 1);
  });

  it('a port in use fails start-up naming TOWERWATCH_PIPELINE_PORT', async () => {
    const taken = service.health?.port ?? assert.fail();
    await assert.rejects(
      startPipelineService({
        config: {
          clickhouseUrl: null,
          dataDir: join(dataDir, 'unused'),
          retentionDays: 30,
          pipelinePort: taken,
          pipelineHost: '127.0.0.1',
          metricsToken: null,
        },
        nc,
        natsUrl: server.url,
        log: () => undefined,
      }),
      (err: unknown) => {
        assert.ok(err instanceof Error && err.cause instanceof HealthServerListenError);
        assert.equal(
          err.message,
          `pipeline: health and metrics server cannot listen on 127.0.0.1:${taken} (address in use); set TOWERWATCH_PIPELINE_PORT to a free port (0 picks one)`,
        );
        return true;
      },
    );
  });
});

describe('health server without a token, before the service attaches', () => {
  it('serves /metrics to loopback clients; /readyz 503 while starting', async () => {
    const logs: string[] = [];
    await using server = await HealthServer.start({
      port: 0,
      host: '0.0.0.0',
      metricsToken: null,
      metrics: new PipelineMetrics(),
      log: (l) => void logs.push(l),
    });
    const local = await get(`http://127.0.0.1:${server.port}/metrics`);
    assert.equal(local.status, 200);
    assert.match(local.text, /^towerwatch_pipeline_events_total 0$/m);
    assert.match(local.text, /^towerwatch_pipeline_consumer_lag_messages nan$/im);
    const ready = await get(`http://127.0.0.1:${server.port}/readyz`);
    assert.equal(ready.status, 503);
    assert.deepEqual(ready.json().checks, { nats: false, clickhouse: false, workers: false, loop: false });
    assert.equal((await get(`http://127.0.0.1:${server.port}/healthz`)).status, 200);
    // Requests from other addresses are not sent from a test (loopback only here): the 403
    // path is the isLoopbackAddress unit test below.
    await server.close();
    await server.closed();
    await assert.rejects(fetch(`http://127.0.0.1:${server.port}/healthz`));
  });

  it('a second server on the same port fails with address in use', async () => {
    await using first = await HealthServer.start({ port: 0, host: '127.0.0.1', metricsToken: null, metrics: new PipelineMetrics(), log: () => undefined });
    await assert.rejects(
      HealthServer.start({ port: first.port, host: '127.0.0.1', metricsToken: null, metrics: new PipelineMetrics(), log: () => undefined }),
      (err: unknown) => {
        assert.ok(err instanceof HealthServerListenError);
        assert.equal(err.code, 'EADDRINUSE');
        return true;
      },
    );
  });
});

describe('access rules as functions', () => {
  it('isLoopbackAddress: 127/8, ::1 and IPv4-mapped loopback only', () => {
    for (const a of ['127.0.0.1', '127.1.2.3', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) assert.equal(isLoopbackAddress(a), true, a);
    for (const a of [undefined, '', '10.0.0.1', '192.168.1.5', '::ffff:10.0.0.1', '::2', 'fe80::1', '128.0.0.1', 'localhost', '0.0.0.0'])
      assert.equal(isLoopbackAddress(a), false, String(a));
  });

  it('bearerMatches: the exact token after Bearer (any case of the scheme), nothing else', () => {
    assert.equal(bearerMatches(`Bearer ${TOKEN}`, TOKEN), true);
    assert.equal(bearerMatches(`bearer ${TOKEN}`, TOKEN), true);
    for (const h of [undefined, '', 'Bearer', `Bearer ${TOKEN} extra`, `Bearer ${TOKEN.toUpperCase()}`, `Basic ${TOKEN}`, TOKEN])
      assert.equal(bearerMatches(h, TOKEN), false, String(h));
  });
});

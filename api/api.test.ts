/**
 * The api against real components: nats-server, the pipeline into embedded ClickHouse (chdb),
 * the uWebSockets.js server, fetch and a WebSocket client. Every reply is also checked against
 * the route's documented schema (checkResponses), so the OpenAPI document stays true.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { JetStreamClient } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import WebSocket from 'ws';
import { BLOCKS_BUCKET } from '../core/blocks.js';
import type { ControlPlaneStore } from '../core/controlPlane/index.js';
import type { DiscoveryReport, UsageEvent } from '../core/domain.js';
import { alertsSubject, encodeAlerts, enterpriseEventsSubject } from '../core/live.js';
import { hashPassword } from '../core/passwords.js';
import { connectNats, discoverySubject, usageSubject } from '../core/nats/index.js';
import { discoveryMsgId, encodeDiscoveryFrame } from '../core/wire.js';
import { connectControlPlane } from '../core/testing/controlPlaneFixture.js';
import { startLaggingProxy } from '../core/testing/laggingProxy.js';
import { withNats } from '../core/testing/natsFixture.js';
import { until } from '../core/testing/until.js';
import { DEMO_CARRIER, seedDemoAccounts } from '../fixtures/accounts.js';
import { briefAlert, briefEvent, publishFrame } from '../fixtures/briefEvents.js';
import { seedWorld } from '../fixtures/seed.js';
import { TowerAgent } from '../fixtures/towerAgent.js';
import { BRIEF, generateWorld } from '../fixtures/world.js';
import { startPipelineService, type PipelineService } from '../pipeline/service.js';
import { CLOSE } from './alertsSocket.js';
import { SESSIONS_BUCKET } from './auth.js';
import { startApiServer, type ApiServer } from './server.js';
import { callApi } from './testing/apiFixture.js';
import { type ClickHouseStandIn, startClickHouseStandIn } from '../core/testing/clickhouseStandIn.js';

const PASSWORD = 'test-password-1';
/**
 * `TOWERWATCH_TEST_CLICKHOUSE=stand-in` (api/api.standIn.test.ts runs this file so): the
 * pipeline and the api reach ClickHouse over HTTP, as with CLICKHOUSE_URL, through the
 * stand-in of core/testing/clickhouseStandIn.ts (a real engine behind ClickHouse's protocol).
 */
const overHttp = process.env['TOWERWATCH_TEST_CLICKHOUSE'] === 'stand-in';
let standIn: ClickHouseStandIn | null = null;
const nats = await withNats();
const world = generateWorld({ seed: 21, enterprises: 3, usersPerEnterprise: 8, towers: 6 });
let clockOffsetMs = 0;
const now = (): number => Date.now() + clockOffsetMs;

let nc: NatsConnection;
let js: JetStreamClient;
let store: ControlPlaneStore;
let dataDir: string;
let pipeline: PipelineService;
let api: ApiServer;
let common: Parameters<typeof startApiServer>[0];
let towers: TowerAgent;
let strict: ApiServer;
const tokens = new Map<string, string>();

interface Res {
  status: number;
  headers: Headers;
  json: any;
  text: string;
}

function call(
  server: ApiServer,
  method: string,
  path: string,
  opts: { token?: string | null; body?: unknown; raw?: string; headers?: Record<string, string> } = {},
): Promise<Res> {
  return callApi(server.url, method, path, opts);
}

async function login(username: string, server: ApiServer = api): Promise<any> {
  const r = await call(server, 'POST', '/auth/login', { body: { username, password: PASSWORD } });
  assert.equal(r.status, 200, `login ${username}: ${r.text}`);
  return r.json;
}
const tokenOf = (username: string): string => tokens.get(username) ?? assert.fail(`no token for ${username}`);
const as = (username: string, method: string, path: string, opts: { body?: unknown; headers?: Record<string, string> } = {}): Promise<Res> =>
  call(api, method, path, { ...opts, token: tokenOf(username) });

function assertError(r: Res, status: number, code: string): void {
  assert.equal(r.status, status, `expected ${status} ${code}, got ${r.status}: ${r.text}`);
  assert.equal(r.json?.error?.code, code, r.text);
  assert.equal(typeof r.json.error.message, 'string');
  assert.ok('details' in r.json.error);
}

const event = briefEvent;
function publishEvents(events: UsageEvent[], carrier = 'att', tower: string = BRIEF.nycTower): Promise<void> {
  return publishFrame(js, carrier, tower, events);
}
async function publishDiscovery(reports: DiscoveryReport[]): Promise<void> {
  const { carrier, tower } = reports[0]!;
  const bytes = encodeDiscoveryFrame(carrier, tower, reports);
  await js.publish(discoverySubject(carrier, tower), bytes, { msgID: discoveryMsgId(carrier, tower, bytes) });
}
async function violationCount(enterprise: string): Promise<number> {
  const rs = await pipeline.clickhouse.client.query({
    query: 'SELECT count() AS n FROM violations WHERE enterprise_id = {e:String}',
    query_params: { e: enterprise },
    format: 'JSONEachRow',
  });
  return Number((await rs.json<{ n: string }>())[0]?.n ?? 0);
}

/** A WebSocket client that records what it receives and how it closed. */
class Socket {
  readonly ws: WebSocket;
  readonly messages: any[] = [];
  closed: { code: number; reason: string } | null = null;
  unexpected: number | null = null;
  readonly opened: Promise<void>;
  constructor(url: string) {
    this.ws = new WebSocket(url);
    this.ws.on('message', (d) => this.messages.push(JSON.parse(d.toString())));
    this.ws.on('close', (code, reason) => (this.closed = { code, reason: reason.toString() }));
    this.ws.on('unexpected-response', (_req, res) => {
      this.unexpected = res.statusCode ?? 0;
      this.ws.terminate();
    });
    this.ws.on('error', () => undefined);
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('close', () => reject(new Error('closed before open')));
    });
    this.opened.catch(() => undefined);
  }
  of(type: string): any[] {
    return this.messages.filter((m) => m.type === type);
  }
}
const wsUrl = (server: ApiServer, query: string): string => `${server.url.replace('http', 'ws')}/ws/alerts?${query}`;

before(async () => {
  ({ nc, js, store } = await connectControlPlane(nats, async (s) => {
    await seedWorld(s, world);
    await seedDemoAccounts(s, PASSWORD);
  }));
  // An enterprise with no devices on the demo carrier's network, and an account of it.
  await store.create('enterprise', { id: 'initech', name: 'Initech', plan_id: 'business', timezone: 'UTC', carrier_ids: ['rogers'] });
  await store.create('account', {
    username: 'admin@initech',
    display_name: 'Initech admin',
    role: 'enterprise_admin',
    enterprise_id: 'initech',
    carrier_id: null,
    password_hash: await hashPassword(PASSWORD),
    created_at: new Date().toISOString(),
  });
  dataDir = await mkdtemp(join(tmpdir(), 'tw-api-'));
  if (overHttp) standIn = await startClickHouseStandIn({ dataDir: join(dataDir, 'stand-in'), user: 'towerwatch', password: 'p@ss w/rd' });
  towers = TowerAgent.start({ nc });
  pipeline = await startPipelineService({
    config: { clickhouseUrl: standIn?.url ?? null, dataDir, retentionDays: 30 },
    nc,
    natsUrl: nats.url,
    log: () => undefined,
    statusEverySeconds: 0,
    pipeline: { threads: 1 },
  });
  common = {
    nc,
    clickhouse: pipeline.clickhouse,
    port: 0,
    jwtSecret: 'x'.repeat(40),
    now,
    checkResponses: true,
    log: (l: string) => process.stderr.write(`${l}\n`),
  };
  api = await startApiServer({ ...common, limits: { perAccountPerMinute: 100_000, loginAttemptsPerAddress: 10_000 } });
  strict = await startApiServer({
    ...common,
    limits: { perAccountPerMinute: 5, loginFailuresPerUserAddress: 3, loginAttemptsPerAddress: 10_000 },
    maxBackpressureBytes: 64 * 1024,
  });
  for (const u of ['admin@acme', 'analyst@acme', 'viewer@acme', 'admin@globex', 'ops@carrier', 'admin@initech']) tokens.set(u, (await login(u)).access_token);

  // Known history: John Doe's denied Slack upload (the brief's alert), and allowed events.
  await publishEvents([
    event(1),
    event(2, { app: BRIEF.zoom, action: BRIEF.startMeeting }),
    event(3, { device: BRIEF.janeDevice, app: BRIEF.zoom, action: BRIEF.startMeeting }),
  ]);
  await until(async () => (await violationCount('acme')) >= 1, 60_000, 'the first violation in ClickHouse');
});
after(async () => {
  await strict?.close();
  await api?.close();
  await pipeline?.close();
  towers?.close();
  await standIn?.close();
  await rm(dataDir, { recursive: true, force: true });
});

describe('auth', () => {
  it('logs in with the brief shape, and refuses a wrong password the same way as an unknown user', async () => {
    const t = await login('admin@acme');
    assert.deepEqual(Object.keys(t).sort(), ['access_token', 'expires_in', 'refresh_token', 'token_type']);
    assert.equal(t.token_type, 'Bearer');
    assert.equal(t.expires_in, 900);
    assertError(await call(api, 'POST', '/auth/login', { body: { username: 'admin@acme', password: 'nope-nope' } }), 401, 'invalid_credentials');
    assertError(await call(api, 'POST', '/auth/login', { body: { username: 'nobody@acme', password: 'nope-nope' } }), 401, 'invalid_credentials');
  });

  it('validates bodies: unknown fields, missing fields, malformed JSON, oversized bodies', async () => {
    assertError(await call(api, 'POST', '/auth/login', { body: { username: 'a', password: 'b', admin: true } }), 400, 'validation_failed');
    const missing = await call(api, 'POST', '/auth/login', { body: { username: 'a' } });
    assertError(missing, 400, 'validation_failed');
    assert.ok(missing.json.error.details.some((d: any) => d.path === 'body.password'));
    assertError(await call(api, 'POST', '/auth/login', { raw: '{"username": "a",' }), 400, 'malformed_json');
    assertError(await call(api, 'POST', '/auth/login', { raw: JSON.stringify({ username: 'a', password: 'x'.repeat(70_000) }) }), 413, 'body_too_large');
  });

  it('rotates refresh tokens; a reused one is refused and revokes its family', async () => {
    const first = await login('analyst@acme');
    const second = await call(api, 'POST', '/auth/refresh', { body: { refresh_token: first.refresh_token } });
    assert.equal(second.status, 200, second.text);
    assert.notEqual(second.json.refresh_token, first.refresh_token);
    assert.equal((await call(api, 'GET', '/towers', { token: second.json.access_token })).status, 200);
    assertError(await call(api, 'POST', '/auth/refresh', { body: { refresh_token: first.refresh_token } }), 401, 'refresh_token_reused');
    // The family is gone: the newer refresh token and its access token stop working too.
    assertError(await call(api, 'POST', '/auth/refresh', { body: { refresh_token: second.json.refresh_token } }), 401, 'session_revoked');
    assertError(await call(api, 'GET', '/towers', { token: second.json.access_token }), 401, 'session_revoked');
    assertError(await call(api, 'POST', '/auth/refresh', { body: { refresh_token: first.access_token } }), 401, 'invalid_token');
  });

  it('a session entry that is not a family ends that session (401, never a 500); logout still revokes its tokens', async () => {
    const t = await login('viewer@acme');
    const family = (JSON.parse(Buffer.from(t.refresh_token.split('.')[1], 'base64url').toString()) as { fam: string }).fam;
    const sessions = await new Kvm(nc).open(SESSIONS_BUCKET);
    await sessions.put(family, 'not a family');
    assertError(await call(api, 'POST', '/auth/refresh', { body: { refresh_token: t.refresh_token } }), 401, 'session_revoked');
    assert.equal((await call(api, 'GET', '/towers', { token: t.access_token })).status, 200, 'the access token lives out its minutes…');
    assert.equal((await call(api, 'POST', '/auth/logout', { token: t.access_token })).status, 204);
    assertError(await call(api, 'GET', '/towers', { token: t.access_token }), 401, 'session_revoked'); // …unless logged out
    assert.equal((await sessions.get(family))?.json<{ revoked: boolean }>().revoked, true, 'every node learns of it');
  });

  it('logout ends the session', async () => {
    const t = await login('viewer@acme');
    assert.equal((await call(api, 'POST', '/auth/logout', { token: t.access_token })).status, 204);
    assertError(await call(api, 'GET', '/towers', { token: t.access_token }), 401, 'session_revoked');
    assertError(await call(api, 'POST', '/auth/refresh', { body: { refresh_token: t.refresh_token } }), 401, 'session_revoked');
  });

  it('every non-public route refuses a missing, malformed, forged or expired token', async () => {
    const forged = tokenOf('admin@acme').slice(0, -4) + 'AAAA';
    const expiring = (await login('admin@acme')).access_token;
    clockOffsetMs = 16 * 60 * 1000;
    try {
      for (const r of api.routes.filter((x) => x.access !== 'public')) {
        const path = r.path.replace(/\{[a-z_]+\}/g, 'x');
        const method = r.method === 'del' ? 'DELETE' : r.method.toUpperCase();
        const body = r.method === 'post' ? {} : undefined;
        assertError(await call(api, method, path, { body }), 401, 'missing_token');
        assertError(await call(api, method, path, { body, headers: { authorization: 'Basic abc' } }), 401, 'invalid_token');
        assertError(await call(api, method, path, { body, token: forged }), 401, 'invalid_token');
        assertError(await call(api, method, path, { body, token: expiring }), 401, 'token_expired');
      }
    } finally {
      clockOffsetMs = 0;
    }
    assert.equal((await call(api, 'GET', '/towers', { token: expiring })).status, 200);
  });

  it('rate limits per account with 429 and Retry-After, and sign-in failures per username and address', async () => {
    const t = (await login('analyst@acme', strict)).access_token;
    const statuses: number[] = [];
    let limited: Res | undefined;
    for (let i = 0; i < 7; i++) {
      const r = await call(strict, 'GET', '/towers', { token: t });
      statuses.push(r.status);
      if (r.status === 429) limited ??= r;
    }
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429, 429]);
    assertError(limited!, 429, 'rate_limited');
    assert.ok(Number(limited!.headers.get('retry-after')) >= 1);
    for (let i = 0; i < 3; i++)
      assertError(await call(strict, 'POST', '/auth/login', { body: { username: 'viewer@acme', password: 'wrong-wrong' } }), 401, 'invalid_credentials');
    const locked = await call(strict, 'POST', '/auth/login', { body: { username: 'viewer@acme', password: PASSWORD } });
    assertError(locked, 429, 'rate_limited');
    assert.equal(locked.headers.get('retry-after'), '15', 'this address backs off (15 s, doubling with each further failure)');
  });
});

describe('shared behaviour', () => {
  it('ETag and If-None-Match give 304; pagination reports total and next page and caps limit', async () => {
    const first = await as('admin@acme', 'GET', '/towers?limit=2');
    assert.equal(first.status, 200);
    assert.equal(first.json.towers.length, 2);
    assert.equal(first.json.total, world.towers.length);
    assert.equal(first.json.next_page, 2);
    const etag = first.headers.get('etag') ?? assert.fail('no etag');
    const again = await as('admin@acme', 'GET', '/towers?limit=2', { headers: { 'if-none-match': etag } });
    assert.equal(again.status, 304);
    assert.equal(again.text, '');
    const last = await as('admin@acme', 'GET', `/towers?limit=2&page=${Math.ceil(world.towers.length / 2)}`);
    assert.equal(last.json.next_page, null);
    assertError(await as('admin@acme', 'GET', '/towers?limit=501'), 400, 'validation_failed');
    assertError(await as('admin@acme', 'GET', '/towers?colour=red'), 400, 'validation_failed');
  });

  it('unknown routes are 404 and wrong methods 405, in the error envelope', async () => {
    assertError(await as('admin@acme', 'GET', '/nope'), 404, 'not_found');
    const r = await as('admin@acme', 'PUT', '/towers');
    assertError(r, 405, 'method_not_allowed');
  });

  it('viewers cannot write or read per-user history; analysts read but cannot write', async () => {
    const rule = { policy_id: BRIEF.adminPolicy, app_id: BRIEF.zoom, action_id: 'record_meeting', permission: 'deny' };
    assertError(await as('viewer@acme', 'POST', '/policy-rules', { body: rule }), 403, 'forbidden');
    assertError(await as('analyst@acme', 'POST', '/policy-rules', { body: rule }), 403, 'forbidden');
    assertError(await as('viewer@acme', 'GET', `/app-usage?user_id=${BRIEF.john}`), 403, 'forbidden');
    assert.equal((await as('analyst@acme', 'GET', `/app-usage?user_id=${BRIEF.john}`)).status, 200);
    assertError(await as('viewer@acme', 'POST', '/remedial-actions', { body: { alert_id: 'att:tower123:1', action: 'block_device' } }), 403, 'forbidden');
    assertError(await as('ops@carrier', 'POST', '/devices', { body: { enterprise_id: 'acme', user_id: BRIEF.john, model: 'x', os: 'iOS' } }), 403, 'forbidden');
  });
});

describe('endpoints of the brief', () => {
  it('GET /dashboard/alerts lists the violation with the brief fields', async () => {
    const r = await as('viewer@acme', 'GET', '/dashboard/alerts');
    assert.equal(r.status, 200, r.text);
    const john = r.json.alerts.find((a: any) => a.alert_id === 'att:tower123:1') ?? assert.fail(r.text);
    assert.deepEqual(
      {
        user_id: john.user_id,
        user_name: john.user_name,
        app_name: john.app_name,
        action: john.action,
        policy_name: john.policy_name,
        severity: john.severity,
        tower_location: john.tower_location,
      },
      {
        user_id: BRIEF.john,
        user_name: 'John Doe',
        app_name: 'Slack',
        action: 'Upload File',
        policy_name: 'Admin Policy',
        severity: 'high',
        tower_location: 'New York City',
      },
    );
    assert.ok(!Number.isNaN(Date.parse(john.timestamp)));
    const low = await as('viewer@acme', 'GET', '/dashboard/alerts?severity=low');
    assert.ok(!low.json.alerts.some((a: any) => a.alert_id === 'att:tower123:1'), 'severity filter applies');
    assertError(await as('viewer@acme', 'GET', '/dashboard/alerts?severity=huge'), 400, 'validation_failed');
  });

  it('GET /dashboard/alerts: identical requests share one page for a second, per enterprise; then it is fresh', async () => {
    let frozen = Date.now();
    const cached = await startApiServer({ ...common, now: () => frozen, limits: { perAccountPerMinute: 100_000, loginAttemptsPerAddress: 10_000 } });
    try {
      const get = async (user: string): Promise<any> => {
        const r = await fetch(`${cached.url}/dashboard/alerts?limit=200`, { headers: { authorization: `Bearer ${tokens.get(user)}` } });
        assert.equal(r.status, 200);
        return r.json();
      };
      const first = await get('viewer@acme');
      const before = await violationCount('acme');
      await publishEvents([event(4242)]);
      await until(async () => (await violationCount('acme')) > before, 60_000, 'the new violation stored');
      const same = await get('analyst@acme');
      assert.deepEqual(same, first, 'within the second: the shared page (another user of the same enterprise too)');
      const globex = await get('admin@globex');
      assert.ok(!globex.alerts.some((a: any) => a.enterprise_id === 'acme'), 'another enterprise never gets the shared page');
      frozen += 2_500;
      const fresh = await get('viewer@acme');
      assert.ok(
        fresh.alerts.some((a: any) => a.alert_id === 'att:tower123:4242'),
        'past the cache time: the new alert',
      );
      assert.equal(fresh.total, first.total + 1);
    } finally {
      await cached.close();
    }
  });

  it('GET /dashboard/metrics answers from the per-minute projections', async () => {
    const r = await as('analyst@acme', 'GET', '/dashboard/metrics?range=1h');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.bucket, 'minute');
    assert.ok(r.json.totals.events >= 3);
    assert.ok(r.json.totals.violations >= 1);
    assert.equal(
      r.json.totals.events,
      r.json.series.reduce((n: number, s: any) => n + s.events, 0),
    );
    assert.ok(r.json.top_users.some((u: any) => u.user_name === 'John Doe'));
    assert.ok(r.json.top_towers.some((t: any) => t.tower_id === BRIEF.nycTower && t.location === 'New York City' && t.violations >= 1));
    assert.ok(
      r.json.violations_by.some(
        (v: any) => v.user_name === 'John Doe' && v.app_name === 'Slack' && v.tower_id === BRIEF.nycTower && v.policy_name === 'Admin Policy',
      ),
    );
    // The same queries with projections forced: a query the projections cannot answer fails.
    const rs = await pipeline.clickhouse.client.query({
      query:
        "SELECT count() AS n FROM violations WHERE enterprise_id = 'acme' AND toStartOfMinute(ts) >= toStartOfMinute(now64() - INTERVAL 1 HOUR) GROUP BY user_id, user_name",
      format: 'JSONEachRow',
      clickhouse_settings: { force_optimize_projection: 1 },
    });
    assert.ok((await rs.json<unknown>()).length >= 1);
    assertError(await as('analyst@acme', 'GET', '/dashboard/metrics?from=2025-01-02T00:00:00Z&to=2025-01-01T00:00:00Z'), 400, 'validation_failed');
    assertError(await as('analyst@acme', 'GET', '/dashboard/metrics?from=yesterday'), 400, 'validation_failed');
  });

  it('GET /devices lists registered devices with user names; POST /devices registers one', async () => {
    const r = await as('viewer@acme', 'GET', `/devices?user_id=${BRIEF.john}`);
    assert.equal(r.status, 200, r.text);
    const d = r.json.devices.find((x: any) => x.id === BRIEF.johnDevice) ?? assert.fail(r.text);
    assert.equal(d.user_name, 'John Doe');
    assert.equal(d.model, 'iPhone 13');
    assert.equal(d.status, 'active', 'seen a moment ago');
    assert.ok(d.last_seen !== null);
    const created = await as('admin@acme', 'POST', '/devices', { body: { user_id: BRIEF.john, model: 'Google Pixel 6', os: 'Android' } });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.json.status, 'registered');
    assert.equal(created.json.user_id, BRIEF.john);
    await until(() => api.view.device(created.json.device_id) !== undefined, 5000, 'the view to see the new device');
    const listed = await as('viewer@acme', 'GET', `/devices?user_id=${BRIEF.john}&status=registered`);
    assert.ok(listed.json.devices.some((x: any) => x.id === created.json.device_id));
    assertError(await as('admin@acme', 'POST', '/devices', { body: { user_id: 'user999999', model: 'x', os: 'iOS' } }), 400, 'unknown_reference');
    assertError(
      await as('admin@acme', 'POST', '/devices', { body: { device_id: BRIEF.johnDevice, user_id: BRIEF.john, model: 'x', os: 'iOS' } }),
      409,
      'device_exists',
    );
  });

  it('GET /devices/discovered lists discovered devices of the enterprise only', async () => {
    await store.create('device', {
      id: 'disc-acme-1',
      enterprise_id: 'acme',
      user_id: null,
      model: 'Pixel 8',
      os: 'Android',
      os_version: '14',
      status: 'discovered',
      registered_at: null,
      first_seen: new Date(Date.now() - 60_000).toISOString(),
    });
    await until(() => api.view.device('disc-acme-1') !== undefined, 5000, 'the view');
    const r = await as('viewer@acme', 'GET', '/devices/discovered');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(
      r.json.devices.map((d: any) => [d.id, d.status, d.sightings]),
      [['disc-acme-1', 'discovered', 0]],
    );
    assert.equal((await as('admin@globex', 'GET', '/devices/discovered')).json.devices.length, 0);
    const onboarded = await as('admin@acme', 'POST', '/devices', { body: { device_id: 'disc-acme-1', user_id: BRIEF.jane, model: 'Pixel 8', os: 'Android' } });
    assert.equal(onboarded.status, 201, onboarded.text);
    await until(() => api.view.device('disc-acme-1')?.status === 'registered', 5000, 'onboarding');
  });

  it('a device a tower reports is listed as discovered, pushed on the socket, and onboarded without retyping it', async () => {
    const acme = new Socket(wsUrl(api, `token=${tokenOf('viewer@acme')}`));
    const globex = new Socket(wsUrl(api, `token=${tokenOf('admin@globex')}`));
    await until(() => acme.of('subscribed').length === 1 && globex.of('subscribed').length === 1, 5000, 'subscribed');
    const ts = Date.now() - 5000;
    const sighting = (device: string, over: Partial<DiscoveryReport> = {}): DiscoveryReport => ({
      ts,
      carrier: 'att',
      tower: BRIEF.nycTower,
      device,
      model: 'Samsung Galaxy S24',
      os: 'Android',
      os_version: '14',
      first_seen: true,
      enterprise: 'acme',
      ...over,
    });
    await publishDiscovery([
      sighting('disc-acme-2'),
      sighting('disc-acme-2', { ts: ts + 2000, first_seen: false }),
      sighting('disc-acme-3', { model: 'iPhone 15', os: 'iOS', os_version: '18' }),
    ]);
    await until(() => acme.of('device.discovered').length === 2, 10_000, 'device.discovered on the socket');
    assert.deepEqual(
      acme
        .of('device.discovered')
        .map((m) => m.device.id)
        .sort(),
      ['disc-acme-2', 'disc-acme-3'],
    );
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(globex.of('device.discovered').length, 0, "not on another enterprise's socket");
    for (const s of [acme, globex]) s.ws.close();

    await until(
      async () => (await as('viewer@acme', 'GET', '/devices/discovered')).json.devices.some((d: any) => d.id === 'disc-acme-2' && d.sightings === 2),
      10_000,
      'listed with its sightings',
    );
    const listed = (await as('viewer@acme', 'GET', '/devices/discovered')).json.devices;
    const d2 = listed.find((d: any) => d.id === 'disc-acme-2');
    assert.deepEqual(
      [d2.model, d2.os, d2.first_seen, d2.last_seen, d2.first_tower_id, d2.first_tower_location, d2.last_tower_location, d2.carrier_id],
      ['Samsung Galaxy S24', 'Android', new Date(ts).toISOString(), new Date(ts + 2000).toISOString(), BRIEF.nycTower, 'New York City', 'New York City', 'att'],
    );
    const ids = async (q: string): Promise<string[]> => (await as('viewer@acme', 'GET', `/devices/discovered${q}`)).json.devices.map((d: any) => d.id).sort();
    assert.deepEqual(await ids('?os=ios'), ['disc-acme-3']);
    assert.deepEqual(await ids(`?tower_id=${BRIEF.nycTower}`), ['disc-acme-2', 'disc-acme-3']);
    assert.deepEqual(await ids(`?tower_id=${BRIEF.sfTower}`), []);
    assert.deepEqual(await ids('?carrier_id=verizon'), []);
    assert.equal((await as('viewer@acme', 'GET', '/devices/discovered?limit=1')).json.devices.length, 1);

    assertError(await as('admin@acme', 'POST', '/devices', { body: { user_id: BRIEF.john } }), 400, 'validation_failed');
    const onboarded = await as('admin@acme', 'POST', '/devices', { body: { device_id: 'disc-acme-2', user_id: BRIEF.john } });
    assert.equal(onboarded.status, 201, onboarded.text);
    assert.deepEqual([onboarded.json.model, onboarded.json.os, onboarded.json.os_version], ['Samsung Galaxy S24', 'Android', '14']);
    await until(() => api.view.device('disc-acme-2')?.status === 'registered', 5000, 'onboarded');
    assert.equal(api.view.device('disc-acme-2')?.first_tower_id, BRIEF.nycTower, 'discovery facts are kept');
    // From now on its usage is John's: the brief's denied upload is a violation of the Admin Policy.
    await publishEvents([event(7001, { device: 'disc-acme-2' })]);
    await until(
      async () => (await as('viewer@acme', 'GET', '/dashboard/alerts?limit=500')).json.alerts.some((a: any) => a.alert_id === 'att:tower123:7001'),
      20_000,
      "the onboarded device's violation",
    );
    const alert = (await as('viewer@acme', 'GET', '/dashboard/alerts?limit=500')).json.alerts.find((a: any) => a.alert_id === 'att:tower123:7001');
    assert.deepEqual([alert.user_id, alert.device_id, alert.policy_name], [BRIEF.john, 'disc-acme-2', 'Admin Policy']);
  });

  it('POST /devices/{id}/reject and /retire move a device out of service; only admins, only their own', async () => {
    await until(() => api.view.device('disc-acme-3') !== undefined, 10_000, 'disc-acme-3 of the previous test');
    assertError(await as('viewer@acme', 'POST', '/devices/disc-acme-3/reject'), 403, 'forbidden');
    assertError(await as('admin@globex', 'POST', '/devices/disc-acme-3/reject'), 404, 'not_found');
    assertError(await as('admin@acme', 'POST', '/devices/no-such-device/reject'), 404, 'not_found');
    assertError(await as('admin@acme', 'POST', `/devices/${BRIEF.janeDevice}/reject`), 409, 'invalid_transition');
    const rejected = await as('admin@acme', 'POST', '/devices/disc-acme-3/reject', { body: { reason: 'personal phone' } });
    assert.equal(rejected.status, 200, rejected.text);
    assert.deepEqual([rejected.json.status, rejected.json.previous_status, rejected.json.reason], ['rejected', 'discovered', 'personal phone']);
    await until(() => api.view.device('disc-acme-3')?.status === 'rejected', 5000, 'rejected in the view');
    assert.ok(!(await as('viewer@acme', 'GET', '/devices/discovered')).json.devices.some((d: any) => d.id === 'disc-acme-3'), 'no longer listed as discovered');
    assert.ok((await as('viewer@acme', 'GET', '/devices?status=rejected')).json.devices.some((d: any) => d.id === 'disc-acme-3'));
    assertError(await as('admin@acme', 'POST', '/devices/disc-acme-3/reject'), 409, 'invalid_transition');
    assertError(await as('admin@acme', 'POST', '/devices/disc-acme-3/reject', { body: { reason: 7 } }), 400, 'validation_failed');

    const created = await as('admin@acme', 'POST', '/devices', { body: { user_id: BRIEF.jane, model: 'Google Pixel 6', os: 'Android' } });
    await until(() => api.view.device(created.json.device_id) !== undefined, 5000, 'registered');
    const retired = await as('admin@acme', 'POST', `/devices/${created.json.device_id}/retire`);
    assert.equal(retired.status, 200, retired.text);
    assert.deepEqual([retired.json.status, retired.json.previous_status], ['retired', 'registered']);
    await until(() => api.view.device(created.json.device_id)?.status === 'retired', 5000, 'retired in the view');
    // A retired phone can be handed to someone else.
    const reissued = await as('admin@acme', 'POST', '/devices', { body: { device_id: created.json.device_id, user_id: BRIEF.john } });
    assert.equal(reissued.status, 201, reissued.text);
  });

  it('GET /me tells the page who is signed in, what they may do and which enterprises they see', async () => {
    const admin = await as('admin@acme', 'GET', '/me');
    assert.equal(admin.status, 200, admin.text);
    assert.deepEqual(
      [admin.json.username, admin.json.role, admin.json.enterprise_id, admin.json.can],
      ['admin@acme', 'enterprise_admin', 'acme', { read: true, history: true, write: true }],
    );
    assert.deepEqual(
      admin.json.enterprises.map((e: any) => e.id),
      ['acme'],
    );
    assert.deepEqual((await as('viewer@acme', 'GET', '/me')).json.can, { read: true, history: false, write: false });
    assert.deepEqual(
      (await as('admin@globex', 'GET', '/me')).json.enterprises.map((e: any) => e.id),
      ['globex'],
      'only its own enterprise',
    );
    const ops = (await as('ops@carrier', 'GET', '/me')).json;
    assert.equal(ops.enterprise_id, null);
    assert.ok(ops.enterprises.some((e: any) => e.id === 'acme') && !ops.enterprises.some((e: any) => e.id === 'initech'), JSON.stringify(ops.enterprises));
    assertError(await call(api, 'GET', '/me'), 401, 'missing_token');
  });

  it('serves the dashboard page: index revalidated, hashed assets cached for good, gzip when asked', async () => {
    const page = await call(api, 'GET', '/');
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    assert.equal(page.headers.get('cache-control'), 'no-cache');
    const script = /src="(\/assets\/main-[A-Z0-9]+\.js)"/.exec(page.text)?.[1] ?? assert.fail(page.text);
    const js = await fetch(`${api.url}${script}`, { headers: { 'accept-encoding': 'gzip' } });
    assert.equal(js.status, 200);
    assert.equal(js.headers.get('content-encoding'), 'gzip');
    assert.match(js.headers.get('cache-control') ?? '', /immutable/);
    assert.ok((await js.text()).length > 10_000);
    const again = await fetch(`${api.url}${script}`, { headers: { 'if-none-match': js.headers.get('etag') ?? '' } });
    assert.equal(again.status, 304);
    assertError(await call(api, 'GET', '/assets/nope.js'), 404, 'not_found');
  });

  it('GET /policies by user and by role has the brief shape', async () => {
    const byUser = await as('viewer@acme', 'GET', `/policies?user_id=${BRIEF.john}`);
    assert.equal(byUser.status, 200, byUser.text);
    assert.equal(byUser.json.user_id, BRIEF.john);
    const admin = byUser.json.policies.find((p: any) => p.policy_id === BRIEF.adminPolicy) ?? assert.fail(byUser.text);
    assert.equal(admin.name, 'Admin Policy');
    assert.ok(admin.rules.some((r: any) => r.app_name === 'Slack' && r.action === 'Upload File' && r.permission === 'deny'));
    const byRole = await as('viewer@acme', 'GET', `/policies?role_id=${BRIEF.adminRole}`);
    assert.equal(byRole.json.role_id, BRIEF.adminRole);
    assert.equal(byRole.json.role_name, 'Admin');
    assert.ok(byRole.json.policies.some((p: any) => p.policy_id === BRIEF.adminPolicy));
    assertError(await as('viewer@acme', 'GET', `/policies?user_id=${BRIEF.john}&role_id=${BRIEF.adminRole}`), 400, 'validation_failed');
  });

  it('POST /policies creates and updates, with If-Match giving 412 when stale', async () => {
    const created = await as('admin@acme', 'POST', '/policies', { body: { policy_id: 'policy_test', name: 'Test Policy', default_permission: 'allow' } });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.json.status, 'created');
    const etag = created.headers.get('etag') ?? assert.fail('no etag');
    await until(() => api.view.policy('policy_test', 'acme') !== undefined, 5000, 'the view');
    const got = await as('viewer@acme', 'GET', '/policies/policy_test');
    assert.equal(got.headers.get('etag'), etag);
    const updated = await as('admin@acme', 'POST', '/policies', { body: { policy_id: 'policy_test', name: 'Test Policy v2' }, headers: { 'if-match': etag } });
    assert.equal(updated.status, 200, updated.text);
    assert.equal(updated.json.status, 'updated');
    assert.notEqual(updated.headers.get('etag'), etag);
    await until(() => api.view.policy('policy_test', 'acme')?.name === 'Test Policy v2', 5000, 'the view');
    assertError(
      await as('admin@acme', 'POST', '/policies', { body: { policy_id: 'policy_test', name: 'stale' }, headers: { 'if-match': etag } }),
      412,
      'precondition_failed',
    );
    assert.equal((await store.get('policy', 'acme', 'policy_test'))?.value.name, 'Test Policy v2', 'the stale write changed nothing');
  });

  it('POST /policy-rules upserts the brief example and validates references and conditions', async () => {
    const body = { policy_id: BRIEF.adminPolicy, role_id: BRIEF.contractorRole, app_id: BRIEF.slack, action_id: BRIEF.uploadFile, permission: 'deny' };
    const first = await as('admin@acme', 'POST', '/policy-rules', { body });
    assert.ok(first.status === 201 || first.status === 200, first.text);
    assert.deepEqual(
      {
        policy_id: first.json.policy_id,
        role_id: first.json.role_id,
        app_id: first.json.app_id,
        action_id: first.json.action_id,
        permission: first.json.permission,
      },
      body,
    );
    assert.ok(first.json.policy_rule_id);
    assert.ok(!Number.isNaN(Date.parse(first.json.updated_at)));
    await until(() => api.view.policyRule(first.json.policy_rule_id, 'acme') !== undefined, 5000, 'the view');
    const second = await as('admin@acme', 'POST', '/policy-rules', { body: { ...body, permission: 'allow' } });
    assert.equal(second.status, 200, second.text);
    assert.equal(second.json.status, 'updated');
    assert.equal(second.json.policy_rule_id, first.json.policy_rule_id);
    const list = await as('viewer@acme', 'GET', `/policy-rules?policy_id=${BRIEF.adminPolicy}`);
    await until(
      async () =>
        (await as('viewer@acme', 'GET', `/policy-rules?policy_id=${BRIEF.adminPolicy}`)).json.policy_rules.some(
          (r: any) => r.policy_rule_id === first.json.policy_rule_id && r.permission === 'allow',
        ),
      5000,
      'the update',
    );
    assert.equal(list.json.policy_id, BRIEF.adminPolicy);
    assertError(await as('admin@acme', 'POST', '/policy-rules', { body: { ...body, app_id: 'no_such_app' } }), 400, 'unknown_reference');
    assertError(await as('admin@acme', 'POST', '/policy-rules', { body: { ...body, when: { time: { from: '25:00', to: '26:00' } } } }), 400, 'invalid_policy');
    assertError(await as('admin@acme', 'POST', '/policy-rules', { body: { ...body, permission: 'maybe' } }), 400, 'validation_failed');
  });

  it('role assignments: assign, list, remove', async () => {
    const a = await as('admin@acme', 'POST', '/roles/policies/assign', { body: { role_id: BRIEF.contractorRole, policy_id: 'policy_test' } });
    assert.equal(a.status, 201, a.text);
    assert.equal(a.json.status, 'assigned');
    await until(
      async () =>
        (await as('viewer@acme', 'GET', `/roles/policies?role=${BRIEF.contractorRole}`)).json.policies.some((p: any) => p.policy_id === 'policy_test'),
      5000,
      'assignment',
    );
    const u = await as('admin@acme', 'POST', '/users/roles/assign', { body: { user_id: BRIEF.jane, role_id: BRIEF.adminRole } });
    assert.equal(u.status, 201, u.text);
    await until(
      async () => (await as('viewer@acme', 'GET', `/users/roles?user=${BRIEF.jane}`)).json.roles.some((r: any) => r.role_id === BRIEF.adminRole),
      5000,
      'role',
    );
    const roles = await as('viewer@acme', 'GET', `/users/roles?user=${BRIEF.jane}`);
    assert.equal(roles.json.user_name, 'Jane Smith');
    assert.equal((await as('admin@acme', 'DELETE', `/users/${BRIEF.jane}/roles/${BRIEF.adminRole}`)).status, 204);
    assert.equal((await as('admin@acme', 'DELETE', `/roles/${BRIEF.contractorRole}/policies/policy_test`)).status, 204);
    assertError(await as('admin@acme', 'DELETE', `/roles/${BRIEF.contractorRole}/policies/policy_test`), 404, 'not_found');
    assert.equal((await as('viewer@acme', 'GET', '/users')).json.users.length, world.users.filter((x) => x.enterprise_id === 'acme').length);
  });

  it('a write answered is what the next request reads: create, assign, add a rule, update, delete, each used at once', async () => {
    // What the page does: create a policy, then at once assign it to a role (a 404 here once failed CI).
    for (let i = 0; i < 40; i++) {
      const id = `policy_ryw_${i}`;
      const created = await as('admin@acme', 'POST', '/policies', { body: { policy_id: id, name: `At once ${i}` } });
      assert.equal(created.status, 201, created.text);
      assert.ok(api.view.policy(id, 'acme'), `round ${i}: the policy is in the view when its 201 is sent`);
      const assigned = await as('admin@acme', 'POST', '/roles/policies/assign', { body: { role_id: BRIEF.contractorRole, policy_id: id } });
      assert.equal(assigned.status, 201, `round ${i}: ${assigned.text}`);
      assert.ok(
        api.view.policiesOfRole(BRIEF.contractorRole, 'acme').some((p) => p.id === id),
        `round ${i}: the assignment is in the view`,
      );
      const rule = await as('admin@acme', 'POST', '/policy-rules', {
        body: { policy_id: id, app_id: BRIEF.slack, action_id: BRIEF.uploadFile, permission: 'deny' },
      });
      assert.equal(rule.status, 201, `round ${i}: ${rule.text}`);
      assert.equal(api.view.rulesOfPolicy(id, 'acme').length, 1, `round ${i}: the rule is in the view`);
      const renamed = await as('admin@acme', 'POST', '/policies', { body: { policy_id: id, name: `Renamed ${i}` } });
      assert.equal(renamed.status, 200, renamed.text);
      assert.equal((await as('viewer@acme', 'GET', `/policies/${id}`)).json.name, `Renamed ${i}`, `round ${i}: the update is read back`);
      assert.equal((await as('admin@acme', 'DELETE', `/roles/${BRIEF.contractorRole}/policies/${id}`)).status, 204);
      assert.ok(!api.view.policiesOfRole(BRIEF.contractorRole, 'acme').some((p) => p.id === id), `round ${i}: the unassignment is in the view`);
      assert.equal((await as('admin@acme', 'DELETE', `/policies/${id}`)).status, 204);
      assertError(await as('viewer@acme', 'GET', `/policies/${id}`), 404, 'not_found');
    }
  });

  it('a write on one node is what a write on another reads: created on one, assigned, ruled, updated and deleted on the other', async () => {
    // Two nodes behind one address (a load balancer): the page's next request may land on either.
    // The other node's link lags 20 ms, so its view trails every write the first node answers.
    const proxy = await startLaggingProxy(nats.url, 20);
    const otherNc = await connectNats(proxy.url, 'lagging api node', { maxReconnectAttempts: 0 });
    const other = await startApiServer({ ...common, nc: otherNc, limits: { perAccountPerMinute: 100_000, loginAttemptsPerAddress: 10_000 } });
    try {
      const on = (server: ApiServer, method: string, path: string, body?: unknown): Promise<Res> =>
        call(server, method, path, { token: tokenOf('admin@acme'), ...(body === undefined ? {} : { body }) });
      for (let i = 0; i < 10; i++) {
        const id = `policy_nodes_${i}`;
        const [first, second] = i % 2 === 0 ? [api, other] : [other, api];
        assert.equal((await on(first, 'POST', '/policies', { policy_id: id, name: `Two nodes ${i}` })).status, 201);
        const assigned = await on(second, 'POST', '/roles/policies/assign', { role_id: BRIEF.contractorRole, policy_id: id });
        assert.equal(assigned.status, 201, `round ${i}: ${assigned.text}`);
        const rule = await on(first, 'POST', '/policy-rules', { policy_id: id, app_id: BRIEF.slack, action_id: BRIEF.uploadFile, permission: 'deny' });
        assert.equal(rule.status, 201, `round ${i}: ${rule.text}`);
        // Without If-Match an update names the revision the node's view has: a stale one is a 409.
        const renamed = await on(second, 'POST', '/policies', { policy_id: id, name: `Renamed ${i}` });
        assert.equal(renamed.status, 200, `round ${i}: ${renamed.text}`);
        const ruleChanged = await on(second, 'POST', '/policy-rules', {
          policy_id: id,
          policy_rule_id: rule.json.policy_rule_id,
          app_id: BRIEF.slack,
          action_id: BRIEF.uploadFile,
          permission: 'allow',
        });
        assert.equal(ruleChanged.status, 200, `round ${i}: ${ruleChanged.text}`);
        const gone = await on(first, 'DELETE', `/policies/${id}`);
        assert.equal(gone.status, 204, `round ${i}: ${gone.text}`);
        assertError(await on(second, 'DELETE', `/policies/${id}`), 404, 'not_found');
      }
    } finally {
      await other.close();
      await otherNc.close();
      await proxy.close();
    }
  });

  it('DELETE a rule, then a whole policy with its rules and role assignments; If-Match guards both; the catalogs rules name (apps, actions, OS)', async () => {
    const p = await as('admin@acme', 'POST', '/policies', { body: { policy_id: 'policy_gone', name: 'Short-lived' } });
    assert.equal(p.status, 201, p.text);
    await until(() => api.view.policy('policy_gone', 'acme') !== undefined, 5000, 'the view');
    assert.equal((await as('admin@acme', 'POST', '/roles/policies/assign', { body: { role_id: BRIEF.contractorRole, policy_id: 'policy_gone' } })).status, 201);
    const rules = await Promise.all(
      [BRIEF.slack, BRIEF.slack].map((app, i) =>
        as('admin@acme', 'POST', '/policy-rules', {
          body: {
            policy_id: 'policy_gone',
            app_id: app,
            action_id: BRIEF.uploadFile,
            permission: 'deny',
            ...(i === 1 ? { when: { bytes_up_over: 1000 } } : {}),
          },
        }),
      ),
    );
    for (const r of rules) assert.equal(r.status, 201, r.text);
    await until(() => api.view.rulesOfPolicy('policy_gone', 'acme').length === 2, 5000, 'the rules');
    const [first, second] = rules.map((r) => r.json.policy_rule_id as string);

    assertError(await as('viewer@acme', 'DELETE', `/policy-rules/${first}`), 403, 'forbidden');
    assertError(await as('admin@globex', 'DELETE', `/policy-rules/${first}`), 404, 'not_found');
    assertError(await as('admin@acme', 'DELETE', `/policy-rules/${first}`, { headers: { 'if-match': '"1"' } }), 412, 'precondition_failed');
    assert.equal((await as('admin@acme', 'DELETE', `/policy-rules/${first}`)).status, 204);
    await until(() => api.view.policyRule(first!, 'acme') === undefined, 5000, 'the rule gone');
    assertError(await as('admin@acme', 'DELETE', `/policy-rules/${first}`), 404, 'not_found');

    const etag = (await as('viewer@acme', 'GET', '/policies/policy_gone')).headers.get('etag') ?? assert.fail('no etag');
    assertError(await as('admin@acme', 'DELETE', '/policies/policy_gone', { headers: { 'if-match': '"1"' } }), 412, 'precondition_failed');
    assert.ok(api.view.policy('policy_gone', 'acme')?.enabled, 'a refused delete changes nothing');
    assert.equal((await as('admin@acme', 'DELETE', '/policies/policy_gone', { headers: { 'if-match': etag } })).status, 204);
    assert.equal(await store.get('policy', 'acme', 'policy_gone'), null);
    assert.equal(await store.get('policy_rule', 'acme', second!), null, 'its rules go with it');
    assert.equal(await store.get('role_policy', 'acme', `${BRIEF.contractorRole}.policy_gone`), null, 'and its role assignments');
    await until(async () => (await as('viewer@acme', 'GET', '/policies/policy_gone')).status === 404, 5000, 'the view');
    assertError(await as('admin@acme', 'DELETE', '/policies/policy_gone'), 404, 'not_found');

    const catalog = await as('viewer@acme', 'GET', '/apps');
    assert.equal(catalog.status, 200, catalog.text);
    assert.ok(catalog.json.apps.some((a: any) => a.app_id === BRIEF.slack && a.name === 'Slack' && typeof a.category === 'string'));
    assert.ok(catalog.json.app_categories.includes('messaging'));
    assert.equal(catalog.json.total, world.apps.length);
    const messaging = await as('viewer@acme', 'GET', '/apps?category=messaging&limit=2');
    assert.equal(messaging.json.apps.length, 2);
    assert.ok(messaging.json.apps.every((a: any) => a.category === 'messaging'));
    assert.equal(messaging.json.total, world.apps.filter((a) => a.category === 'messaging').length);
    const actions = await as('viewer@acme', 'GET', '/actions?limit=500');
    assert.ok(actions.json.actions.some((a: any) => a.action_id === BRIEF.uploadFile && a.name === 'Upload File'));
    assert.equal(actions.json.total, world.actions.length);
    // The OS names and versions of acme's devices, never another enterprise's.
    const os = (await as('viewer@acme', 'GET', '/os-versions')).json.os as Array<{
      name: string;
      devices: number;
      versions: Array<{ version: string; devices: number }>;
    }>;
    const acmeDevices = world.devices.filter((d) => d.enterprise_id === 'acme');
    assert.ok(os.reduce((n, o) => n + o.devices, 0) >= acmeDevices.length, JSON.stringify(os));
    for (const d of acmeDevices)
      assert.ok(
        os.some((o) => o.name === d.os && o.versions.some((v) => v.version === d.os_version)),
        `${d.os} ${d.os_version}`,
      );
    assertError(await as('admin@globex', 'GET', '/os-versions?enterprise_id=acme'), 403, 'tenant_forbidden');
  });

  it('GET /carriers and GET /towers have the brief shape; a carrier operator sees its own', async () => {
    const c = await as('viewer@acme', 'GET', '/carriers?limit=100');
    const att = c.json.carriers.find((x: any) => x.id === 'att') ?? assert.fail(c.text);
    assert.equal(att.name, 'AT&T');
    assert.ok(att.supported_towers.includes(BRIEF.nycTower));
    const t = await as('viewer@acme', 'GET', '/towers?limit=100');
    const nyc = t.json.towers.find((x: any) => x.id === BRIEF.nycTower);
    assert.deepEqual([nyc.location, nyc.carriers, nyc.status], ['New York City', ['AT&T', 'Verizon'], 'active']);
    const ops = await as('ops@carrier', 'GET', '/towers?limit=100');
    assert.ok(ops.json.towers.length > 0);
    assert.ok(ops.json.towers.every((x: any) => x.carrier_ids.includes(DEMO_CARRIER)));
    assert.deepEqual(
      (await as('ops@carrier', 'GET', '/carriers')).json.carriers.map((x: any) => x.id),
      [DEMO_CARRIER],
    );
  });

  it('GET /app-usage has the brief shape', async () => {
    const r = await as('analyst@acme', 'GET', `/app-usage?user_id=${BRIEF.john}`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.user_name, 'John Doe');
    const slack = r.json.app_usage.find((u: any) => u.app_id === BRIEF.slack) ?? assert.fail(r.text);
    assert.deepEqual([slack.app_name, slack.cell_tower_id, slack.cell_tower_location], ['Slack', BRIEF.nycTower, 'New York City']);
    assertError(await as('analyst@acme', 'GET', '/app-usage'), 400, 'validation_failed');
  });

  it('POST /remedial-actions queues the action once; the worker runs it at the tower; GET /remedial-actions lists the outcome', async () => {
    const r = await as('admin@acme', 'POST', '/remedial-actions', { body: { alert_id: 'att:tower123:1', action: 'block_app' } });
    assert.equal(r.status, 202, r.text);
    assert.equal(r.json.action_name, 'Block App');
    assert.equal(r.json.status, 'queued');
    assert.equal(r.json.device_id, BRIEF.johnDevice);
    const again = await as('admin@acme', 'POST', '/remedial-actions', { body: { alert_id: 'att:tower123:1', action: 'block_app' } });
    assert.equal(again.json.status, 'already_queued');
    assert.equal(again.json.action_id, r.json.action_id);
    await until(
      async () => (await as('viewer@acme', 'GET', '/remedial-actions')).json.remedial_actions.some((a: any) => a.action_id === r.json.action_id),
      20_000,
      'the outcome',
    );
    const listed = (await as('viewer@acme', 'GET', '/remedial-actions?status=success')).json.remedial_actions.filter(
      (a: any) => a.action_id === r.json.action_id,
    );
    assert.equal(listed.length, 1, 'executed once');
    assert.deepEqual([listed[0].action_name, listed[0].trigger, listed[0].requested_by, listed[0].attempts], ['Block App', 'manual', 'admin@acme', 1]);
    assert.equal(towers.allows({ tower: BRIEF.nycTower, device: BRIEF.johnDevice, app: BRIEF.slack }), false, 'the tower blocked the app for the device');
    assert.equal((await as('admin@globex', 'GET', '/remedial-actions')).json.remedial_actions.length, 0, 'another enterprise sees none');
    // ?wait: the outcome itself (the brief's shape), once the worker has run it at the tower.
    const appsBlocked = towers.blocked.apps;
    const done = await as('admin@acme', 'POST', '/remedial-actions?wait=15', { body: { alert_id: 'att:tower123:1', action: 'unblock_app' } });
    assert.equal(done.status, 200, done.text);
    assert.deepEqual([done.json.action_name, done.json.status, done.json.trigger], ['Unblock App', 'success', 'manual']);
    assert.ok(Date.parse(done.json.executed_at) >= Date.parse(done.json.requested_at) - 1000, done.text);
    assert.equal(towers.blocked.apps, appsBlocked - 1, 'the app unblocked at the tower');
    const one = await as('viewer@acme', 'GET', `/remedial-actions/${done.json.action_id}`);
    assert.equal(one.status, 200, one.text);
    assert.deepEqual([one.json.status, one.json.executed_at, one.json.requested_by], ['success', done.json.executed_at, 'admin@acme']);
    // Asked again: the same action, already run: its recorded outcome at once.
    const again2 = await as('admin@acme', 'POST', '/remedial-actions?wait=5', { body: { alert_id: 'att:tower123:1', action: 'unblock_app' } });
    assert.deepEqual([again2.status, again2.json.status, again2.json.executed_at], [200, 'success', done.json.executed_at]);
    assertError(await as('admin@globex', 'GET', `/remedial-actions/${done.json.action_id}`), 404, 'not_found');
    assertError(await as('viewer@acme', 'GET', '/remedial-actions/ra_nope'), 404, 'not_found');
    assertError(
      await as('admin@acme', 'POST', '/remedial-actions?wait=99', { body: { alert_id: 'att:tower123:1', action: 'unblock_app' } }),
      400,
      'validation_failed',
    );
    assertError(await as('admin@acme', 'POST', '/remedial-actions', { body: { alert_id: 'att:tower123:999999', action: 'block_device' } }), 404, 'not_found');
    assertError(await as('admin@acme', 'POST', '/remedial-actions', { body: { alert_id: 'att:tower123:1', action: 'wipe_device' } }), 400, 'validation_failed');
    assertError(await as('viewer@acme', 'GET', '/remedial-actions?status=maybe'), 400, 'validation_failed');
  });
  it('GET /blocks lists what the towers were told to stop carrying; DELETE lifts a block at its tower; POST /blocks blocks by hand', async () => {
    const done = await as('admin@acme', 'POST', '/remedial-actions?wait=15', { body: { alert_id: 'att:tower123:1', action: 'block_device' } });
    assert.equal(done.status, 200, done.text);
    assert.equal(done.json.status, 'success');
    let block: any;
    await until(
      async () =>
        (block = (await as('viewer@acme', 'GET', `/blocks?device_id=${BRIEF.johnDevice}`)).json.blocks.find(
          (b: any) => b.app_id === null && b.tower_id === BRIEF.nycTower,
        )) !== undefined,
      10_000,
      "John's device block",
    );
    assert.ok(['auto', 'admin@acme'].includes(block.created_by), JSON.stringify(block));
    assert.ok(block.hits >= 1 && block.scope === 'tower' && block.status === 'active', JSON.stringify(block));
    assert.deepEqual((await as('viewer@acme', 'GET', `/blocks/${block.block_id}`)).json, block);
    assert.equal(towers.allows({ tower: BRIEF.nycTower, device: BRIEF.johnDevice, app: BRIEF.slack }), false);
    // Another enterprise sees none of it and cannot lift it; viewers cannot either.
    assert.equal((await as('admin@globex', 'GET', '/blocks')).json.blocks.length, 0);
    assertError(await as('admin@globex', 'GET', `/blocks/${block.block_id}`), 404, 'not_found');
    assertError(await as('admin@globex', 'DELETE', `/blocks/${block.block_id}`), 404, 'not_found');
    assertError(await as('viewer@acme', 'DELETE', `/blocks/${block.block_id}`), 403, 'forbidden');
    assertError(await as('viewer@acme', 'GET', '/blocks/bk_nope'), 404, 'not_found');

    const lift = await as('admin@acme', 'DELETE', `/blocks/${block.block_id}`);
    assert.equal(lift.status, 202, lift.text);
    await until(async () => (await as('viewer@acme', 'GET', `/blocks/${block.block_id}`)).status === 404, 15_000, 'the block lifted');
    // The outcome row is written just after the block is removed.
    let outcome: Res = lift;
    await until(
      async () => (outcome = await as('viewer@acme', 'GET', `/remedial-actions/${lift.json.action_id}`)).status === 200,
      10_000,
      'the unblock recorded',
    );
    assert.deepEqual([outcome.json.action_name, outcome.json.status, outcome.json.requested_by], ['Unblock Device', 'success', 'admin@acme']);
    assert.equal(towers.allows({ tower: BRIEF.nycTower, device: BRIEF.johnDevice, app: 'some-other-app' }), true, 'the tower carries the device again');

    // By hand, without an alert: one app at another tower.
    const body = { device_id: BRIEF.johnDevice, tower_id: BRIEF.sfTower, app_id: BRIEF.slack };
    assertError(await as('viewer@acme', 'POST', '/blocks', { body }), 403, 'forbidden');
    assertError(await as('admin@globex', 'POST', '/blocks', { body }), 404, 'not_found');
    assertError(await as('admin@acme', 'POST', '/blocks', { body: { ...body, tower_id: 'no-such-tower' } }), 400, 'unknown_reference');
    const asked = await as('admin@acme', 'POST', '/blocks', { body });
    assert.equal(asked.status, 202, asked.text);
    let made: Res = asked;
    await until(async () => (made = await as('viewer@acme', 'GET', `/blocks/${asked.json.block_id}`)).status === 200, 15_000, 'the manual block');
    assert.deepEqual([made.json.app_id, made.json.tower_id, made.json.created_by, made.json.expires_at], [BRIEF.slack, BRIEF.sfTower, 'admin@acme', null]);
    assert.equal(towers.allows({ tower: BRIEF.sfTower, device: BRIEF.johnDevice, app: BRIEF.slack }), false, 'blocked at that tower');
    assert.equal((await as('admin@acme', 'DELETE', `/blocks/${asked.json.block_id}`)).status, 202);
    await until(async () => (await as('viewer@acme', 'GET', `/blocks/${asked.json.block_id}`)).status === 404, 15_000, 'lifted');

    // Wider scopes: every tower of one of the enterprise's carriers, or of all of them.
    const acmeCarriers = world.enterprises.find((e) => e.id === BRIEF.acme)?.carrier_ids ?? assert.fail('acme carriers');
    assertError(await as('admin@acme', 'POST', '/blocks', { body: { device_id: BRIEF.johnDevice, scope: 'carrier' } }), 400, 'validation_failed');
    assertError(await as('admin@acme', 'POST', '/blocks', { body: { device_id: BRIEF.johnDevice, scope: 'tower' } }), 400, 'validation_failed');
    assertError(
      await as('admin@acme', 'POST', '/blocks', { body: { device_id: BRIEF.johnDevice, scope: 'carrier', carrier_id: 'not-acmes' } }),
      400,
      'unknown_reference',
    );
    const wide = await as('admin@acme', 'POST', '/blocks', { body: { device_id: BRIEF.johnDevice, scope: 'enterprise' } });
    assert.equal(wide.status, 202, wide.text);
    let wideBlock: Res = wide;
    await until(async () => (wideBlock = await as('viewer@acme', 'GET', `/blocks/${wide.json.block_id}`)).status === 200, 15_000, 'the enterprise-wide block');
    const reach = world.towers.filter((t) => t.carrier_ids.some((c) => acmeCarriers.includes(c))).map((t) => t.id);
    assert.deepEqual([wideBlock.json.scope, wideBlock.json.tower_id, [...wideBlock.json.towers].sort()], ['enterprise', '', [...reach].sort()]);
    for (const t of reach) assert.equal(towers.allows({ tower: t, device: BRIEF.johnDevice, app: 'x' }), false, `blocked at ${t}`);
    const byTower = await as('viewer@acme', 'GET', `/blocks?tower_id=${reach[0]!}`);
    assert.ok(
      byTower.json.blocks.some((b: { block_id: string }) => b.block_id === wide.json.block_id),
      'listed under each tower it reached',
    );
    assert.equal((await as('admin@acme', 'DELETE', `/blocks/${wide.json.block_id}`)).status, 202);
    await until(async () => (await as('viewer@acme', 'GET', `/blocks/${wide.json.block_id}`)).status === 404, 15_000, 'lifted everywhere');
    for (const t of reach) assert.equal(towers.allows({ tower: t, device: BRIEF.johnDevice, app: 'x' }), true, `carried again at ${t}`);
  });

  it('an entry of the blocks bucket that is not a block: left out of GET /blocks, named by GET and DELETE of it (500 block_unreadable), unseen by others', async () => {
    const kv = await new Kvm(nc).open(BLOCKS_BUCKET);
    const hash = 'f'.repeat(32);
    await kv.put(`${BRIEF.acme}.${hash}`, '{"block_id": "bk_' + hash + '", "hits": "many"}');
    try {
      const listed = await as('viewer@acme', 'GET', '/blocks');
      assert.equal(listed.status, 200, listed.text);
      assert.ok(!listed.json.blocks.some((b: { block_id: string }) => b.block_id === `bk_${hash}`));
      for (const method of ['GET', 'DELETE'] as const) {
        const r = await as('admin@acme', method, `/blocks/bk_${hash}`);
        assertError(r, 500, 'block_unreadable');
        assert.deepEqual(r.json.error.details, { block_id: `bk_${hash}` });
      }
      assertError(await as('admin@globex', 'GET', `/blocks/bk_${hash}`), 404, 'not_found');
    } finally {
      await kv.purge(`${BRIEF.acme}.${hash}`);
    }
  });
});

describe('explain', () => {
  it("an alert's explanation replays its stored inputs through the version that decided it and gives the stored verdict", async () => {
    let r: Res | undefined;
    // The api records the version on start; the first event may be explained once it is there.
    await until(async () => (r = await as('viewer@acme', 'GET', '/dashboard/alerts/att:tower123:1/explain')).status === 200, 20_000, 'an explanation');
    const x = r!.json;
    assert.equal(x.matches_stored, true, r!.text);
    assert.equal(x.stored.permission, 'deny');
    assert.equal(x.explanation.deciding.rule_id, x.stored.rule_id);
    assert.ok(x.explanation.deciding.checks.every((c: { held: boolean }) => c.held));
    assert.deepEqual(x.inputs.role_ids.length > 0, true);
    assert.equal(x.policy_version.author, 'system');
    assert.match(x.policy_version.version, /^[0-9a-f]{16}$/);
  });

  it('an allowed event is explained too (history access); bad keys, other enterprises and old rows are clear errors', async () => {
    const r = await as('analyst@acme', 'GET', '/app-usage/att:tower123:2/explain');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.stored.permission, 'allow');
    assert.equal(r.json.matches_stored, true);
    assertError(await as('viewer@acme', 'GET', '/app-usage/att:tower123:2/explain'), 403, 'forbidden');
    assertError(await as('admin@globex', 'GET', '/dashboard/alerts/att:tower123:1/explain'), 404, 'not_found');
    assertError(await as('viewer@acme', 'GET', '/dashboard/alerts/not-a-key/explain'), 404, 'not_found');
    // A row stored before decision inputs were kept (schema < 9).
    await pipeline.clickhouse.client.insert({
      table: `${pipeline.clickhouse.database}.app_usage`,
      values: [
        {
          enterprise_id: 'acme',
          ts: new Date().toISOString().replace('T', ' ').slice(0, 23),
          carrier: 'att',
          tower_id: 'old-tower',
          event_id: 5,
          policy_version: 'v0',
          verdict: 'deny',
        },
      ],
      format: 'JSONEachRow',
      clickhouse_settings: { date_time_input_format: 'best_effort' },
    });
    assertError(await as('analyst@acme', 'GET', '/app-usage/att:old-tower:5/explain'), 422, 'not_replayable');
  });
});

describe('policy previews', () => {
  const preview = async (user: string, body: unknown): Promise<Res> => {
    const started = await as(user, 'POST', '/policy-previews', { body });
    if (started.status !== 202) return started;
    let r: Res = started;
    await until(async () => (r = await as(user, 'GET', `/policy-previews/${started.json.preview_id}`)).json.status !== 'running', 30_000, 'the preview');
    return r;
  };
  const acmePolicies = async (): Promise<any[]> => (await as('admin@acme', 'GET', `/policies?user_id=${BRIEF.john}`)).json.policies;

  it("the policies as they are change nothing; allowing everything John's policies deny turns his alert to allow, and says whom it hits", async () => {
    const policies = await acmePolicies();
    const same = await preview('analyst@acme', { policies, range: '24h' });
    assert.equal(same.json.status, 'done', same.text);
    assert.equal(same.json.progress, 1);
    const r = same.json.result;
    assert.ok(r.events_scanned >= 3, same.text);
    // Against the verdicts stored (by whatever version was in force then) nothing changes.
    assert.equal(r.changed.deny_to_allow + r.changed.allow_to_deny, 0, same.text);
    const current = await as('admin@acme', 'POST', '/decisions', { body: { device_id: BRIEF.johnDevice, app_id: BRIEF.slack, action_id: BRIEF.uploadFile } });
    assert.equal(r.policy_version, current.json.policy_version, 'the unchanged draft compiles to the version in force');

    const allowing = policies.map((p: any) => ({
      ...p,
      default_permission: 'allow',
      rules: p.rules.map((rule: any) => ({ ...rule, permission: 'allow', severity: null, remediation: null })),
    }));
    const changed = await preview('admin@acme', { policies: allowing, range: '24h' });
    assert.equal(changed.json.status, 'done', changed.text);
    const c = changed.json.result;
    assert.ok(c.changed.deny_to_allow >= 1, changed.text);
    assert.equal(c.changed.allow_to_deny, 0);
    assert.ok(
      c.samples.some((x: any) => x.event_key === 'att:tower123:1' && x.change === 'deny_to_allow' && x.after.permission === 'allow'),
      changed.text,
    );
    assert.ok(c.top_users.some((u: any) => u.user_id === BRIEF.john));
    assert.notEqual(c.policy_version, r.policy_version);
    // A finished preview is not cancelled.
    assert.equal((await as('admin@acme', 'DELETE', `/policy-previews/${changed.json.preview_id}`)).json.status, 'done');
  });

  it('a draft that does not compile is a 400; viewers and other enterprises get nothing', async () => {
    const policies = await acmePolicies();
    const bad = policies.map((p: any) => ({ ...p, rules: p.rules.map((rule: any) => ({ ...rule, permission: 'allow', remediation: 'block_app' })) }));
    assertError(await as('admin@acme', 'POST', '/policy-previews', { body: { policies: bad } }), 400, 'invalid_policy');
    assertError(await as('viewer@acme', 'POST', '/policy-previews', { body: { policies } }), 403, 'forbidden');
    const started = await as('analyst@acme', 'POST', '/policy-previews', { body: { policies } });
    assert.equal(started.status, 202, started.text);
    // A new rule (no id yet) in the draft, as the page's "Add rule" sends it.
    const added = policies.map((p: any, i: number) =>
      i === 0 ? { ...p, rules: [...p.rules, { policy_id: p.policy_id, app_id: BRIEF.slack, permission: 'deny' }] } : p,
    );
    const withNew = await preview('admin@acme', { policies: added, range: '24h' });
    assert.equal(withNew.json.status, 'done', withNew.text);
    assertError(await as('admin@globex', 'GET', `/policy-previews/${started.json.preview_id}`), 404, 'not_found');
    assertError(await as('admin@globex', 'DELETE', `/policy-previews/${started.json.preview_id}`), 404, 'not_found');
    assertError(await as('analyst@acme', 'GET', '/policy-previews/pv_nope'), 404, 'not_found');
  });
});

describe('shadow mode', () => {
  it('a shadow rule is evaluated on live traffic and stored, never alerted or versioned; promoted, it is enforced', async () => {
    const rule = {
      policy_rule_id: 'shadow-zoom',
      policy_id: BRIEF.adminPolicy,
      app_id: BRIEF.zoom,
      action_id: BRIEF.startMeeting,
      permission: 'deny',
      severity: 'high',
    };
    const versionsBefore = (await as('admin@acme', 'GET', `/policies/${BRIEF.adminPolicy}/versions`)).json.versions.length;
    const created = await as('admin@acme', 'POST', '/policy-rules', { body: { ...rule, mode: 'shadow' } });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.json.mode, 'shadow');
    let id = 8100;
    const meeting = (): Promise<void> => publishEvents([event(id++, { app: BRIEF.zoom, action: BRIEF.startMeeting })]);
    await until(
      async () => {
        await meeting();
        return (await as('viewer@acme', 'GET', '/dashboard/shadow?range=1h')).json.would_deny >= 1;
      },
      40_000,
      'a shadow decision stored',
    );
    const s = (await as('viewer@acme', 'GET', `/dashboard/shadow?range=1h&policy_id=${BRIEF.adminPolicy}`)).json;
    assert.ok(s.evaluated >= s.would_deny && s.would_deny >= 1, JSON.stringify(s));
    assert.ok(
      s.by_rule.some((r: any) => r.rule_id === 'shadow-zoom' && r.would_deny >= 1),
      JSON.stringify(s),
    );
    assert.ok(s.top_users.some((u: any) => u.user_id === BRIEF.john));
    assert.ok(
      !(await as('viewer@acme', 'GET', '/dashboard/alerts?limit=500')).json.alerts.some((a: any) => a.rule_id === 'shadow-zoom'),
      'no alert from a shadow rule',
    );
    assert.equal(
      (await as('admin@acme', 'GET', `/policies/${BRIEF.adminPolicy}/versions`)).json.versions.length,
      versionsBefore,
      'the enforced policies did not change',
    );

    const promoted = await as('admin@acme', 'POST', '/policy-rules', { body: { ...rule, mode: 'enforce' } });
    assert.equal(promoted.status, 200, promoted.text);
    await until(
      async () => {
        await meeting();
        return (await as('viewer@acme', 'GET', '/dashboard/alerts?limit=500')).json.alerts.some((a: any) => a.rule_id === 'shadow-zoom');
      },
      40_000,
      'the promoted rule enforced',
    );
    await until(
      async () => (await as('admin@acme', 'GET', `/policies/${BRIEF.adminPolicy}/versions`)).json.versions[0]?.author === 'admin@acme',
      20_000,
      'the promotion recorded as a version',
    );
    // Out of the way of the tests after.
    assert.equal((await as('admin@acme', 'POST', '/policy-rules', { body: { ...rule, enabled: false } })).status, 200);
  });
});

describe('tenancy', () => {
  it('an enterprise account never reads another enterprise by filter or by id', async () => {
    const g = (path: string): Promise<Res> => as('admin@globex', 'GET', path);
    assertError(await g('/dashboard/alerts?enterprise_id=acme'), 403, 'tenant_forbidden');
    assertError(await g('/dashboard/metrics?enterprise_id=acme'), 403, 'tenant_forbidden');
    assertError(await g('/devices?enterprise_id=acme'), 403, 'tenant_forbidden');
    assertError(await g('/devices/discovered?enterprise_id=acme'), 403, 'tenant_forbidden');
    assertError(await g('/policies?enterprise_id=acme'), 403, 'tenant_forbidden');
    assertError(await g('/users?enterprise_id=acme'), 403, 'tenant_forbidden');
    assertError(await g('/roles?enterprise_id=acme'), 403, 'tenant_forbidden');
    assertError(await g(`/policies?user_id=${BRIEF.john}`), 404, 'not_found');
    assertError(await g(`/policies?role_id=${BRIEF.adminRole}`), 404, 'not_found');
    assertError(await g(`/policies/${BRIEF.adminPolicy}`), 404, 'not_found');
    assertError(await g(`/policy-rules?policy_id=${BRIEF.adminPolicy}`), 404, 'not_found');
    assertError(await g(`/roles/policies?role=${BRIEF.adminRole}`), 404, 'not_found');
    assertError(await g(`/users/roles?user=${BRIEF.john}`), 404, 'not_found');
    assertError(await g(`/app-usage?user_id=${BRIEF.john}`), 404, 'not_found');
    const alerts = await g('/dashboard/alerts');
    assert.ok(!alerts.json.alerts.some((a: any) => a.alert_id === 'att:tower123:1'));
    const devices = await g('/devices?limit=500');
    assert.ok(devices.json.devices.length > 0 && !devices.json.devices.some((d: any) => d.id === BRIEF.johnDevice));
    const metrics = await g('/dashboard/metrics?range=1h');
    assert.ok(!metrics.json.top_users.some((u: any) => u.user_id === BRIEF.john));
  });

  it('an enterprise account never changes another enterprise', async () => {
    const w = (method: string, path: string, body?: unknown): Promise<Res> => as('admin@globex', method, path, { body });
    assertError(await w('POST', '/policy-rules', { policy_id: BRIEF.adminPolicy, app_id: BRIEF.slack, permission: 'allow' }), 400, 'unknown_reference');
    assertError(await w('POST', '/policies', { enterprise_id: 'acme', name: 'x' }), 403, 'tenant_forbidden');
    // Policy ids are per enterprise: the same id makes globex a policy of its own, acme's stays.
    assert.equal((await w('POST', '/policies', { policy_id: BRIEF.adminPolicy, name: 'hijack' })).status, 201);
    assertError(await w('POST', '/roles/policies/assign', { role_id: BRIEF.adminRole, policy_id: BRIEF.adminPolicy }), 404, 'not_found');
    assertError(await w('POST', '/users/roles/assign', { user_id: BRIEF.john, role_id: BRIEF.adminRole }), 404, 'not_found');
    assertError(await w('DELETE', `/roles/${BRIEF.adminRole}/policies/${BRIEF.adminPolicy}`), 404, 'not_found');
    assertError(await w('DELETE', `/users/${BRIEF.john}/roles/${BRIEF.adminRole}`), 404, 'not_found');
    assertError(await w('POST', '/devices', { user_id: BRIEF.john, model: 'x', os: 'iOS' }), 400, 'unknown_reference');
    assertError(
      await w('POST', '/devices', { device_id: BRIEF.johnDevice, user_id: world.users.find((u) => u.enterprise_id === 'globex')!.id, model: 'x', os: 'iOS' }),
      404,
      'not_found',
    );
    assertError(await w('POST', '/remedial-actions', { alert_id: 'att:tower123:1', action: 'block_device' }), 404, 'not_found');
    assertError(await w('POST', `/devices/${BRIEF.johnDevice}/retire`), 404, 'not_found');
    assertError(await w('POST', `/devices/${BRIEF.johnDevice}/reject`), 404, 'not_found');
    assertError(await w('POST', `/devices/${BRIEF.johnDevice}/retire`, { enterprise_id: 'acme' }), 403, 'tenant_forbidden');
    assert.equal((await store.get('device', 'acme', BRIEF.johnDevice))?.value.status, 'registered');
    // Deleting by an id acme also uses deletes globex's own policy of that id, never acme's.
    assertError(await w('DELETE', `/policy-rules/${api.view.rulesOfPolicy(BRIEF.adminPolicy, 'acme')[0]!.id}`), 404, 'not_found');
    await until(() => api.view.policy(BRIEF.adminPolicy, 'globex') !== undefined, 5000, "globex's policy");
    assert.equal((await w('DELETE', `/policies/${BRIEF.adminPolicy}`)).status, 204);
    assert.ok((await store.get('policy_rule', 'acme', api.view.rulesOfPolicy(BRIEF.adminPolicy, 'acme')[0]!.id)) !== null);
    assert.equal((await store.get('policy', 'acme', BRIEF.adminPolicy))?.value.name, 'Admin Policy');
    assert.ok((await store.get('role_policy', 'acme', `${BRIEF.adminRole}.${BRIEF.adminPolicy}`)) !== null);
    assert.ok((await store.get('user_role', 'acme', `${BRIEF.john}.${BRIEF.adminRole}`)) !== null);
    assert.equal((await store.get('device', 'acme', BRIEF.johnDevice))?.value.user_id, BRIEF.john);
  });

  it('a carrier operator names an enterprise on its network, and only those', async () => {
    assertError(await as('ops@carrier', 'GET', '/dashboard/alerts'), 400, 'enterprise_required');
    assertError(await as('ops@carrier', 'GET', '/dashboard/alerts?enterprise_id=initech'), 403, 'tenant_forbidden');
    const r = await as('ops@carrier', 'GET', '/dashboard/alerts?enterprise_id=acme');
    assert.equal(r.status, 200, r.text);
    assert.ok(r.json.alerts.some((a: any) => a.alert_id === 'att:tower123:1'));
    assertError(await as('admin@initech', 'GET', '/dashboard/alerts?enterprise_id=acme'), 403, 'tenant_forbidden');
  });
});

describe('operations', () => {
  it('/healthz, /readyz, /metrics', async () => {
    assert.deepEqual((await call(api, 'GET', '/healthz')).json, { status: 'ok' });
    const ready = await call(api, 'GET', '/readyz');
    assert.equal(ready.status, 200, ready.text);
    assert.equal(ready.json.checks.clickhouse.ok, true);
    const m = await call(api, 'GET', '/metrics');
    assert.match(m.headers.get('content-type') ?? '', /text\/plain/);
    assert.match(m.text, /towerwatch_api_requests_total\{method="GET",route="\/towers",status="200"\} \d+/);
    assert.match(m.text, /towerwatch_api_request_duration_seconds_bucket/);
  });

  it('/openapi.json documents every route with its parameters and reply shape', async () => {
    const doc = (await call(api, 'GET', '/openapi.json')).json;
    assert.equal(doc.openapi, '3.1.0');
    const documented = Object.entries(doc.paths as Record<string, Record<string, any>>).flatMap(([p, ms]) =>
      Object.keys(ms).map((m) => `${m.toUpperCase()} ${p}`),
    );
    const served = api.routes.map((r) => `${r.method === 'del' ? 'DELETE' : r.method.toUpperCase()} ${r.path}`);
    assert.deepEqual(documented.sort(), served.sort());
    for (const brief of [
      'POST /auth/login',
      'POST /auth/refresh',
      'GET /dashboard/metrics',
      'GET /dashboard/alerts',
      'GET /devices',
      'POST /devices',
      'GET /devices/discovered',
      'GET /policies',
      'POST /policies',
      'GET /policy-rules',
      'POST /policy-rules',
      'POST /roles/policies/assign',
      'POST /users/roles/assign',
      'GET /roles/policies',
      'GET /users/roles',
      'DELETE /roles/{role_id}/policies/{policy_id}',
      'DELETE /users/{user_id}/roles/{role_id}',
      'GET /carriers',
      'GET /towers',
      'GET /app-usage',
      'POST /remedial-actions',
    ]) {
      assert.ok(served.includes(brief), `${brief} is served`);
    }
    const alerts = doc.paths['/dashboard/alerts'].get;
    assert.ok(alerts.parameters.some((p: any) => p.name === 'severity' && p.in === 'query'));
    assert.ok(alerts.responses['200'].content['application/json'].schema.properties.alerts);
    assert.equal(doc.paths['/auth/login'].post.requestBody.content['application/json'].schema.additionalProperties, false);
  });
});

describe('/ws/alerts', () => {
  it('pushes a violation from the pipeline to the enterprise socket only, honouring filters', async () => {
    const acme = new Socket(wsUrl(api, `token=${tokenOf('viewer@acme')}`));
    const lowOnly = new Socket(wsUrl(api, `token=${tokenOf('viewer@acme')}&severity=low`));
    const nycOnly = new Socket(wsUrl(api, `token=${tokenOf('viewer@acme')}&tower_id=${BRIEF.nycTower}`));
    const otherTower = new Socket(wsUrl(api, `token=${tokenOf('viewer@acme')}&tower_id=${BRIEF.sfTower}`));
    const globex = new Socket(wsUrl(api, `token=${tokenOf('admin@globex')}`));
    const firstMessage = new Socket(wsUrl(api, ''));
    const batched = new Socket(wsUrl(api, `token=${tokenOf('viewer@acme')}&batch=1`));
    const batchedLow = new Socket(wsUrl(api, `token=${tokenOf('viewer@acme')}&batch=1&severity=low`));
    const batchedHigh = new Socket(wsUrl(api, `token=${tokenOf('viewer@acme')}&batch=1&severity=high,critical`));
    const all = [acme, lowOnly, nycOnly, otherTower, globex, firstMessage, batched, batchedLow, batchedHigh];
    await Promise.all(all.map((s) => s.opened));
    firstMessage.ws.send(JSON.stringify({ type: 'auth', token: tokenOf('analyst@acme') }));
    await until(() => all.every((s) => s.of('subscribed').length === 1), 5000, 'subscriptions');
    assert.equal(acme.of('subscribed')[0].enterprise_id, 'acme');

    await publishEvents([event(100)]);
    await until(
      () => acme.of('alert').some((a) => a.alert_id === 'att:tower123:100') && firstMessage.of('alert').length > 0 && nycOnly.of('alert').length > 0,
      60_000,
      'the alert on the socket',
    );
    const a = acme.of('alert').find((x) => x.alert_id === 'att:tower123:100');
    assert.deepEqual(
      [a.user_name, a.app_name, a.action, a.policy_name, a.severity, a.tower_location],
      ['John Doe', 'Slack', 'Upload File', 'Admin Policy', 'high', 'New York City'],
    );
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(lowOnly.of('alert').length, 0, 'severity filter');
    assert.equal(otherTower.of('alert').length, 0, 'tower filter');
    assert.equal(globex.of('alert').length, 0, 'another enterprise');
    // batch=1: one `alerts` message per pipeline batch, filters applied, never single `alert`s.
    await until(() => batched.of('alerts').length > 0 && batchedHigh.of('alerts').length > 0, 5000, 'the batched alerts');
    for (const s of [batched, batchedHigh]) {
      assert.ok(
        s
          .of('alerts')
          .flatMap((m) => m.alerts)
          .some((x: any) => x.alert_id === 'att:tower123:100' && x.user_name === 'John Doe'),
      );
      assert.equal(s.of('alert').length, 0);
    }
    assert.equal(batchedLow.of('alerts').length, 0, 'severity filter on a batched socket');
    // Typed events (remediation outcomes, discovered devices) reach the enterprise's sockets, filtered or not.
    nc.publish(enterpriseEventsSubject('acme'), JSON.stringify({ type: 'remediation', action_id: 'ra_x', status: 'success' }));
    await until(() => acme.of('remediation').length === 1 && nycOnly.of('remediation').length === 1, 5000, 'the remediation message');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(globex.of('remediation').length, 0, 'not to another enterprise');

    // Alerts come at least once (the pipeline sends them before storing their rows; a batch
    // redelivered after a crash sends them again): each reaches a socket once.
    const seen = acme.of('alert').length;
    const again = briefAlert('att:tower123:100', { severity: 'high' });
    nc.publish(alertsSubject('acme'), encodeAlerts([again, briefAlert('att:tower123:90001', { severity: 'high' })]));
    await until(() => acme.of('alert').some((x) => x.alert_id === 'att:tower123:90001'), 5000, 'the new alert');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(acme.of('alert').length, seen + 1, 'the repeat was not sent again');
    // A remedial action on an alert this node has seen waits a moment for its row (here none
    // comes: 404 after the wait); one it has not seen, or another enterprise's, is answered at once.
    const timed = async (user: string, alertId: string): Promise<[number, number]> => {
      const t = Date.now();
      const r = await as(user, 'POST', '/remedial-actions', { body: { alert_id: alertId, action: 'block_app' } });
      return [r.status, Date.now() - t];
    };
    const [waitedStatus, waitedMs] = await timed('admin@acme', 'att:tower123:90001');
    assert.equal(waitedStatus, 404);
    assert.ok(waitedMs >= 2500, `waited ${waitedMs} ms for the row`);
    for (const [user, id] of [
      ['admin@acme', 'att:tower123:90002'],
      ['admin@globex', 'att:tower123:90001'],
    ] as const) {
      const [status, ms] = await timed(user, id);
      assert.equal(status, 404);
      assert.ok(ms < 1500, `${user} ${id}: answered in ${ms} ms`);
    }
    for (const s of all) s.ws.close();
  });

  it('refuses bad tokens before the upgrade, another tenant, a silent socket, and closes at token expiry', async () => {
    const bad = new Socket(wsUrl(api, 'token=nonsense'));
    const foreign = new Socket(wsUrl(api, `token=${tokenOf('admin@globex')}&enterprise_id=acme`));
    const silent = new Socket(wsUrl(api, ''));
    await until(() => bad.unexpected !== null && foreign.unexpected !== null, 5000, 'upgrade refusals');
    assert.equal(bad.unexpected, 401);
    assert.equal(foreign.unexpected, 403);
    await until(() => silent.closed !== null, 8000, 'auth timeout');
    assert.equal(silent.closed!.code, CLOSE.unauthorized);

    const expiring = new Socket(wsUrl(api, `token=${(await login('viewer@acme')).access_token}`));
    await until(() => expiring.of('subscribed').length === 1, 5000, 'subscribed');
    clockOffsetMs = 16 * 60 * 1000;
    try {
      await until(() => expiring.closed !== null, 5000, 'expiry close');
    } finally {
      clockOffsetMs = 0;
    }
    assert.equal(expiring.closed!.code, CLOSE.tokenExpired);
  });

  it('closes a socket that stops reading (4008) instead of buffering without bound', async () => {
    const token = (await login('analyst@acme', strict)).access_token;
    const slow = new Socket(wsUrl(strict, `token=${token}`));
    const fast = new Socket(wsUrl(strict, `token=${token}`));
    await until(() => slow.of('subscribed').length === 1 && fast.of('subscribed').length === 1, 5000, 'subscribed');
    (slow.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    // Small batches with pauses between them: the reading socket keeps up, the paused one's
    // kernel buffer fills and then its server-side buffer passes the 64 KiB limit.
    const filler = { type: 'test.filler', data: 'x'.repeat(10_000) };
    for (let i = 0; i < 4000 && slow.closed === null && strict.alerts.connections > 1; i++) {
      for (let k = 0; k < 4; k++) strict.alerts.publish('acme', filler);
      await new Promise((r) => setTimeout(r, 2));
    }
    (slow.ws as unknown as { _socket: { resume(): void } })._socket.resume();
    await until(() => slow.closed !== null, 10_000, 'slow consumer close');
    // The close frame queues behind the unread data, so the client may only see the drop (1006).
    assert.ok([CLOSE.slowConsumer, 1006].includes(slow.closed!.code), `closed with ${slow.closed!.code}`);
    const m = await call(strict, 'GET', '/metrics');
    const drops = m.text.split('\n').filter((l) => l.startsWith('towerwatch_ws_dropped_total'));
    assert.ok(
      drops.some((l) => /reason="slow_consumer"\} [1-9]/.test(l)),
      `the server closed it as a slow consumer: ${drops.join('; ')}`,
    );
    assert.equal(fast.closed, null, 'a reading socket stays');
    assert.ok(fast.of('test.filler').length > 100);
    fast.ws.close();
  });
});

if (overHttp) {
  describe('over HTTP (the CLICKHOUSE_URL path, on the stand-in)', () => {
    it('every table the project inserts into was written through HTTP, and every request had its credentials', async () => {
      assert.equal(pipeline.clickhouse.embedded, false);
      // A frame no decoder takes: its dead letter is the one table the tests above do not write.
      await js.publish(usageSubject('att', BRIEF.nycTower), new Uint8Array([0xc1, 0xc1, 0xc1]));
      await until(() => standIn!.inserts('dead_letters') >= 1, 30_000, 'the dead letter inserted over HTTP');
      for (const table of ['app_usage', 'violations', 'dead_letters', 'discovery_sightings', 'remedial_actions']) {
        assert.ok(standIn!.inserts(table) > 0, `${table}: inserted over HTTP`);
      }
      const formats = new Set(standIn!.requests.flatMap((r) => (r.insert ? [`${r.insert.table} ${r.insert.format}`] : [])));
      assert.ok(formats.has('app_usage Native') && formats.has('violations Native'), [...formats].join(', '));
      // Nothing the api or pipeline sent was refused by the engine, apart from what tests provoke.
      const refused = standIn!.requests.filter((r) => r.status !== 200);
      assert.deepEqual(refused, [], 'requests the engine refused');
    });
  });
}

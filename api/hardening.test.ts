/**
 * Issue 14, the api's part: it stays up and says nothing it should not under bad input.
 * Real components (nats-server, embedded ClickHouse, the uWebSockets.js server, HTTP and
 * WebSocket clients), one fixture for the file (api/testing/apiFixture.ts).
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { networkInterfaces } from 'node:os';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { until } from '../core/testing/until.js';
import { BRIEF } from '../fixtures/world.js';
import { CLOSE } from './alertsSocket.js';
import { isLoopbackAddress } from '../core/metricsAccess.js';
import { callApi, FIXTURE_PASSWORD, startApiFixture, type FixtureReply } from './testing/apiFixture.js';

const fx = await startApiFixture();
const { call } = fx;

function assertError(r: FixtureReply, status: number, code: string): void {
  assert.equal(r.status, status, `expected ${status} ${code}, got ${r.status}: ${r.text}`);
  assert.equal(r.json?.error?.code, code, r.text);
  assert.equal(typeof r.json.error.message, 'string');
  assert.ok('details' in r.json.error, r.text);
}

/** One HTTP request from a chosen local address (127.0.0.0/8 is all loopback on Linux). */
function from(localAddress: string, url: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<FixtureReply> {
  return new Promise((resolve, reject) => {
    const u = new URL(path, url);
    const text = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname + u.search,
        method,
        localAddress,
        headers: { ...headers, ...(text === undefined ? {} : { 'content-type': 'application/json' }) },
      },
      (res) => {
        let got = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (got += d));
        res.on('end', () => {
          let json: unknown;
          try {
            json = got === '' ? null : JSON.parse(got);
          } catch {
            json = null;
          }
          resolve({ status: res.statusCode ?? 0, headers: new Headers(res.headers as Record<string, string>), json, text: got });
        });
      },
    );
    req.on('error', reject);
    req.end(text);
  });
}

async function stillServing(url = fx.api.url): Promise<void> {
  const r = await fetch(`${url}/healthz`);
  assert.equal(r.status, 200, 'the server still answers /healthz');
}

describe('bad paths and sockets do not end the process', () => {
  it('broken percent-encoding in path parameters is 400 bad_path before auth', async () => {
    assertError(await call('GET', '/policies/%ZZ'), 400, 'bad_path');
    assertError(await call('DELETE', '/users/%E0%A4%A/roles/x'), 400, 'bad_path');
    assertError(await call('POST', '/devices/%/retire', { body: {} }), 400, 'bad_path');
    assertError(await call('GET', '/policies/%ZZ', { as: 'viewer@acme' }), 400, 'bad_path');
    await stillServing();
  });

  it('/ws/alerts: any JSON message, bad query encoding, bad tokens, huge messages and headers are answered, never fatal', async () => {
    const wsUrl = (q: string): string => `${fx.api.url.replace('http', 'ws')}/ws/alerts?${q}`;
    const outcome = (url: string, send?: string | Buffer, headers: Record<string, string> = {}): Promise<{ status?: number; close?: number }> =>
      new Promise((resolve) => {
        const ws = new WebSocket(url, { headers });
        ws.on('unexpected-response', (_req, res) => {
          resolve({ status: res.statusCode ?? 0 });
          ws.terminate();
        });
        ws.on('open', () => {
          if (send !== undefined) ws.send(send);
        });
        ws.on('close', (code) => resolve({ close: code }));
        ws.on('error', () => undefined);
      });
    // JSON that is not an object: a bad message (4000), not a TypeError inside uWS.
    for (const m of ['null', '5', '"auth"', '[]', 'true', '{"type":"auth","token":null}']) {
      assert.deepEqual(await outcome(wsUrl(''), m), { close: CLOSE.badMessage }, m);
    }
    assert.deepEqual(await outcome(wsUrl('token=%ZZ')), { status: 401 });
    assert.deepEqual(await outcome(wsUrl('token=abc&severity=%E0%A4%A')), { status: 400 });
    assert.deepEqual(await outcome(wsUrl(`token=${'x'.repeat(5000)}`)), { status: 431 }, 'a 5 KB query makes the head too large');
    assert.deepEqual(await outcome(wsUrl(`token=${'x'.repeat(3000)}`)), { status: 401 });
    assert.deepEqual(await outcome(wsUrl(`token=${fx.tokens['viewer@acme']}`), undefined, { 'x-big': 'y'.repeat(6000) }), { status: 431 });
    // Over maxPayloadLength (16 KiB): uWS closes the socket (1009 or a drop), the server stays.
    const big = await outcome(wsUrl(''), Buffer.alloc(64 * 1024, 0x61));
    assert.ok(big.close !== undefined && [1006, 1009].includes(big.close), JSON.stringify(big));
    const ok = new WebSocket(wsUrl(`token=${fx.tokens['viewer@acme']}`));
    const subscribed = await new Promise<any>((resolve, reject) => {
      ok.on('message', (d) => resolve(JSON.parse(d.toString())));
      ok.on('error', reject);
    });
    assert.equal(subscribed.type, 'subscribed');
    ok.close();
    await stillServing();
  });
});

describe('/metrics', () => {
  it('with TOWERWATCH_METRICS_TOKEN set: the bearer token, or 401 in the envelope', async () => {
    const token = 'metrics-token-0123456789';
    const server = await fx.startServer({ metricsToken: token });
    assertError(await call('GET', '/metrics', { server }), 401, 'missing_token');
    assertError(await call('GET', '/metrics', { server, headers: { authorization: 'Bearer metrics-token-012345678X' } }), 401, 'invalid_token');
    assertError(await call('GET', '/metrics', { server, headers: { authorization: `Bearer ${token}x` } }), 401, 'invalid_token');
    assertError(await call('GET', '/metrics', { server, token: fx.tokens['admin@acme'] }), 401, 'invalid_token');
    const r = await call('GET', '/metrics', { server, headers: { authorization: `Bearer ${token}` } });
    assert.equal(r.status, 200, r.text);
    assert.match(r.text, /towerwatch_api_requests_total/);
  });

  it('without a token: loopback clients only, 403 for others', async () => {
    assert.equal((await call('GET', '/metrics')).status, 200);
    assert.equal((await from('127.0.0.9', fx.api.url, 'GET', '/metrics')).status, 200, '127.0.0.0/8 is loopback');
    for (const a of ['127.0.0.1', '0000:0000:0000:0000:0000:0000:0000:0001', '0000:0000:0000:0000:0000:ffff:7f00:0001', '::1'])
      assert.ok(isLoopbackAddress(a), a);
    for (const a of ['192.0.2.2', '10.0.0.1', '0000:0000:0000:0000:0000:ffff:0a00:0001', 'fd00::2', '', 'garbage']) assert.ok(!isLoopbackAddress(a), a);
    // A real non-loopback client, when this machine has an address other than loopback.
    const external = Object.values(networkInterfaces())
      .flat()
      .find((i) => i !== undefined && !i.internal && i.family === 'IPv4');
    if (external === undefined) return;
    const server = await fx.startServer({ host: '0.0.0.0' });
    const url = `http://${external.address}:${server.port}`;
    const r = await from(external.address, url, 'GET', '/metrics', undefined, { 'x-forwarded-for': '127.0.0.1' });
    assertError(r, 403, 'forbidden');
    assert.equal((await from(external.address, url, 'GET', '/healthz')).status, 200);
  });
});

describe('the per-account limit holds across api nodes', () => {
  it('two nodes on one NATS admit the limit between them (within 10 %), not twice it; another account is not affected', async () => {
    const limits = { perAccountPerMinute: 40, loginAttemptsPerAddress: 1_000_000 };
    const a = await fx.startServer({ limits });
    // The second node on a connection of its own, as on another machine.
    const b = await fx.startServer({ limits, nc: await fx.nats.connect('api node b') });
    const login = await callApi(a.url, 'POST', '/auth/login', { body: { username: 'analyst@acme', password: FIXTURE_PASSWORD } });
    const token = login.json.access_token as string;
    const served = { a: 0, b: 0 };
    let refused: FixtureReply | undefined;
    // 100 requests, 10 at a time, alternating between the nodes.
    for (let round = 0; round < 10; round++) {
      const replies = await Promise.all(
        Array.from({ length: 10 }, async (_, i) => {
          const node = i % 2 === 0 ? 'a' : 'b';
          return { node, r: await callApi((node === 'a' ? a : b).url, 'GET', '/towers', { token }) };
        }),
      );
      for (const { node, r } of replies) {
        if (r.status === 200) served[node as 'a' | 'b']++;
        else {
          assertError(r, 429, 'rate_limited');
          refused ??= r;
        }
      }
    }
    const total = served.a + served.b;
    assert.ok(total <= 40 && total >= 36, `admitted ${total} (a ${served.a}, b ${served.b}) of a shared 40 per minute`);
    assert.ok(served.a > 0 && served.b > 0, 'both nodes served');
    assert.ok(Number(refused?.headers.get('retry-after')) >= 1);
    // Another account of the same enterprise has its own allowance on either node.
    const other = await callApi(b.url, 'POST', '/auth/login', { body: { username: 'viewer@acme', password: FIXTURE_PASSWORD } });
    assert.equal((await callApi(b.url, 'GET', '/towers', { token: other.json.access_token as string })).status, 200);
  });
});

describe('sign-in limits: per username and address, with a growing wait', () => {
  /** A server limiting sign-in failures (3 per username and address, the per-user ceiling and base wait given), and sign-ins as `username` from any address. */
  async function signInLimits(username: string, limits: { loginFailuresPerUser: number; loginBackoffBaseSeconds: number }) {
    const server = await fx.startServer({
      limits: { perAccountPerMinute: 1_000_000, loginAttemptsPerAddress: 1_000_000, loginFailuresPerUserAddress: 3, ...limits },
    });
    const login = (address: string, password: string): Promise<FixtureReply> => from(address, server.url, 'POST', '/auth/login', { username, password });
    return { server, login };
  }

  it('one address guessing a password does not lock the real user out elsewhere; its wait grows', async () => {
    const { login } = await signInLimits('viewer@acme', { loginFailuresPerUser: 50, loginBackoffBaseSeconds: 1 });
    for (let i = 0; i < 3; i++) assertError(await login('127.0.0.2', 'wrong-wrong'), 401, 'invalid_credentials');
    const limited = await login('127.0.0.2', FIXTURE_PASSWORD);
    assertError(limited, 429, 'rate_limited');
    assert.equal(limited.headers.get('retry-after'), '1');
    // The real user, from another address, signs in at once.
    assert.equal((await login('127.0.0.3', FIXTURE_PASSWORD)).status, 200);
    // Each further failure from the guessing address doubles its wait.
    await new Promise((r) => setTimeout(r, 1100));
    assertError(await login('127.0.0.2', 'wrong-wrong'), 401, 'invalid_credentials');
    const longer = await login('127.0.0.2', 'wrong-wrong');
    assertError(longer, 429, 'rate_limited');
    assert.equal(longer.headers.get('retry-after'), '2');
    await new Promise((r) => setTimeout(r, 2100));
    assertError(await login('127.0.0.2', 'wrong-wrong'), 401, 'invalid_credentials');
    assert.equal((await login('127.0.0.2', 'wrong-wrong')).headers.get('retry-after'), '4');
    assert.equal((await login('127.0.0.3', FIXTURE_PASSWORD)).status, 200, 'still fine from elsewhere');
  });

  it('a username guessed from many addresses backs off everywhere past a much higher ceiling', async () => {
    const { server, login } = await signInLimits('analyst@acme', { loginFailuresPerUser: 6, loginBackoffBaseSeconds: 30 });
    for (const a of ['127.0.1.1', '127.0.1.2']) for (let i = 0; i < 2; i++) assertError(await login(a, 'wrong-wrong'), 401, 'invalid_credentials');
    // The real user signing in meanwhile does not wipe the guesses from everywhere else.
    assert.equal((await login('127.0.1.9', FIXTURE_PASSWORD)).status, 200);
    for (let i = 0; i < 2; i++) assertError(await login('127.0.1.3', 'wrong-wrong'), 401, 'invalid_credentials');
    const everywhere = await login('127.0.1.4', FIXTURE_PASSWORD);
    assertError(everywhere, 429, 'rate_limited');
    assert.ok(Number(everywhere.headers.get('retry-after')) >= 29, everywhere.headers.get('retry-after') ?? '');
    // Other usernames are not affected.
    assert.equal((await from('127.0.1.4', server.url, 'POST', '/auth/login', { username: 'viewer@acme', password: FIXTURE_PASSWORD })).status, 200);
  });
});

describe('tenancy of create endpoints: nothing about another enterprise ids', () => {
  it("creating a policy or rule with another enterprise's id is an ordinary create, exactly as with a free id", async () => {
    const globex = (body: unknown, path = '/policies'): Promise<FixtureReply> => call('POST', path, { as: 'admin@globex', body });
    assert.ok(fx.api.view.policy(BRIEF.adminPolicy, 'acme') !== undefined && fx.api.view.policy(BRIEF.adminPolicy, 'globex') === undefined);
    const taken = await globex({ policy_id: BRIEF.adminPolicy, name: 'Mine' });
    const free = await globex({ policy_id: 'policy_never_used_anywhere', name: 'Mine' });
    assert.equal(taken.status, 201, taken.text);
    assert.equal(free.status, 201, free.text);
    assert.deepEqual([taken.json.status, taken.json.name], [free.json.status, free.json.name]);
    assert.equal(fx.api.view.policy(BRIEF.adminPolicy, 'acme')?.name, 'Admin Policy', "acme's policy is untouched");
    await until(() => fx.api.view.policy(BRIEF.adminPolicy, 'globex') !== undefined, 5000, 'the view to see globex policy');
    const acmeRule = fx.api.view.rulesOfPolicy(BRIEF.adminPolicy, 'acme')[0] ?? assert.fail('acme has a rule');
    const rule = await globex({ policy_rule_id: acmeRule.id, policy_id: BRIEF.adminPolicy, app_id: BRIEF.zoom, permission: 'allow' }, '/policy-rules');
    assert.equal(rule.status, 201, rule.text);
    assert.equal(fx.api.view.policyRule(acmeRule.id, 'acme')?.app_id, acmeRule.app_id, "acme's rule is untouched");
  });

  it("registering another enterprise's device id is answered as for an id that exists nowhere", async () => {
    const globexUser = fx.world.users.find((u) => u.enterprise_id === 'globex') ?? assert.fail('a globex user');
    const theirs = await call('POST', '/devices', { as: 'admin@globex', body: { device_id: BRIEF.johnDevice, user_id: globexUser.id, model: 'x', os: 'iOS' } });
    const nowhere = await call('POST', '/devices', {
      as: 'admin@globex',
      body: { device_id: 'device_exists_nowhere', user_id: globexUser.id, model: 'x', os: 'iOS' },
    });
    assertError(theirs, 404, 'not_found');
    assertError(nowhere, 404, 'not_found');
    const strip = (r: FixtureReply): string => r.text.replaceAll(BRIEF.johnDevice, 'ID').replaceAll('device_exists_nowhere', 'ID');
    assert.equal(strip(theirs), strip(nowhere));
    assert.equal(fx.api.view.device(BRIEF.johnDevice)?.enterprise_id, 'acme');
    // An own device in service is still a 409.
    const john = await call('POST', '/devices', { as: 'admin@acme', body: { device_id: BRIEF.johnDevice, user_id: BRIEF.john } });
    assertError(john, 409, 'device_exists');
  });
});

describe('time ranges', () => {
  it('negative, non-finite, absurd or reversed times are 400 validation_failed on every history query', async () => {
    const bad = [
      'to=-1',
      'from=-1',
      'to=Infinity',
      'to=NaN',
      'from=1e3',
      'to=0x10',
      'from=2999-01-01T00:00:00Z',
      'to=99999999999999',
      'from=0',
      'to=2001',
      'from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z',
      `from=${'9'.repeat(400)}`,
    ];
    for (const path of ['/dashboard/metrics', '/dashboard/alerts', `/app-usage?user_id=${BRIEF.john}`, '/remedial-actions']) {
      for (const q of bad) {
        const r = await call('GET', `${path}${path.includes('?') ? '&' : '?'}${q}`, { as: 'admin@acme' });
        assertError(r, 400, 'validation_failed');
        assert.ok(Array.isArray(r.json.error.details) && r.json.error.details.some((d: any) => /^query\.(from|to)$/.test(d.path)), `${path} ${q}: ${r.text}`);
      }
      const good = await call('GET', `${path}${path.includes('?') ? '&' : '?'}from=2026-01-01T00:00:00Z&to=${Date.UTC(2026, 0, 2)}`, { as: 'admin@acme' });
      assert.equal(good.status, 200, `${path}: ${good.text}`);
    }
  });
});

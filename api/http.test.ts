/** The HTTP layer against a real uWebSockets.js server and real HTTP requests (fetch). */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { after, before, test } from 'node:test';
import { z } from 'zod';
import { ApiError } from './errors.js';
import { routeFor, startHttpServer, type HttpServer } from './http.js';
import { loadUws } from './uws.js';

let server: HttpServer;
const route = routeFor<never>();
let version = 1;
let cachedCalls = 0;

before(async () => {
  server = await startHttpServer({
    bodyLimitBytes: 1024,
    log: () => undefined,
    routes: [
      { method: 'get', path: '/healthz', summary: 'liveness', tag: 't', access: 'public', handler: () => ({ body: { status: 'ok' } }) },
      {
        method: 'post',
        path: '/echo',
        summary: 'echo',
        tag: 't',
        access: 'public',
        body: z.strictObject({ name: z.string().min(1), count: z.number().int().optional() }),
        handler: async ({ body }) => {
          await new Promise((r) => setTimeout(r, 5)); // a reply written after an await is corked
          return { status: 201, body };
        },
      },
      route({
        method: 'get',
        path: '/roles/{role_id}/policies/{policy_id}',
        summary: 'params',
        tag: 't',
        access: 'public',
        query: z.strictObject({ page: z.coerce.number().int().min(1).default(1) }),
        handler: ({ params, query }) => ({ body: { ...params, page: query.page } }),
      }),
      {
        method: 'get',
        path: '/teapot',
        summary: 'refuses',
        tag: 't',
        access: 'public',
        handler: () => {
          throw new ApiError(409, 'conflict', 'no', { why: 'test' });
        },
      },
      {
        method: 'get',
        path: '/cached',
        summary: 'cached by a version',
        tag: 't',
        access: 'public',
        cacheKey: () => String(version),
        handler: () => {
          cachedCalls++;
          return { body: { version, calls: cachedCalls } };
        },
      },
      {
        method: 'get',
        path: '/bug',
        summary: 'a bug',
        tag: 't',
        access: 'public',
        handler: () => {
          throw new Error('secret internals');
        },
      },
      { method: 'get', path: '/policies/{policy_id}', summary: 'one param', tag: 't', access: 'public', handler: ({ params }) => ({ body: params }) },
      {
        method: 'post',
        path: '/devices/{device_id}/retire',
        summary: 'param and body',
        tag: 't',
        access: 'public',
        handler: ({ params }) => ({ body: params }),
      },
      { method: 'del', path: '/users/{user_id}/roles/{role_id}', summary: 'two params', tag: 't', access: 'public', handler: () => ({ status: 204 }) },
    ],
  });
});
after(() => server.close());

async function call(path: string, init?: RequestInit): Promise<{ status: number; body: any; headers: Headers }> {
  const r = await fetch(`${server.url}${path}`, init);
  const text = await r.text();
  return { status: r.status, body: text === '' ? null : JSON.parse(text), headers: r.headers };
}
const post = (path: string, body: string): RequestInit => ({ method: 'POST', body, headers: { 'content-type': 'application/json' } });

test('the native uWebSockets.js build is loaded (not the ws fallback)', () => {
  const uws = loadUws();
  assert.equal(typeof uws.App, 'function');
  assert.equal(typeof uws.us_socket_local_port, 'function');
});

test('GET returns JSON; path params and coerced query parameters', async () => {
  assert.deepEqual(await call('/healthz').then((r) => [r.status, r.body, r.headers.get('content-type')]), [200, { status: 'ok' }, 'application/json']);
  const r = await call('/roles/r%201/policies/p-2?page=3');
  assert.deepEqual([r.status, r.body], [200, { role_id: 'r 1', policy_id: 'p-2', page: 3 }]);
});

test('a valid body is parsed and answered after an await', async () => {
  const r = await call('/echo', post('/echo', JSON.stringify({ name: 'ada', count: 2 })));
  assert.deepEqual([r.status, r.body], [201, { name: 'ada', count: 2 }]);
});

test('malformed JSON → 400 malformed_json, in the envelope', async () => {
  const r = await call('/echo', post('/echo', '{"name": '));
  assert.equal(r.status, 400);
  assert.equal(r.body.error.code, 'malformed_json');
  assert.equal(typeof r.body.error.message, 'string');
  assert.ok('details' in r.body.error);
});

test('unknown fields and wrong types → 400 validation_failed listing each issue', async () => {
  const r = await call('/echo', post('/echo', JSON.stringify({ name: '', extra: 1 })));
  assert.equal(r.status, 400);
  assert.equal(r.body.error.code, 'validation_failed');
  const paths = (r.body.error.details as Array<{ path: string }>).map((d) => d.path).sort();
  assert.deepEqual(paths, ['body', 'body.name']);
  const q = await call('/roles/a/policies/b?page=0&bogus=1');
  assert.equal(q.status, 400);
  assert.equal(q.body.error.code, 'validation_failed');
});

test('a body over the limit → 413; a missing body where one is required → 400', async () => {
  const r = await call('/echo', post('/echo', JSON.stringify({ name: 'x'.repeat(5000) })));
  assert.equal(r.status, 413);
  assert.equal(r.body.error.code, 'body_too_large');
  const empty = await call('/echo', { method: 'POST' });
  assert.equal(empty.status, 400);
  assert.equal(empty.body.error.code, 'validation_failed');
});

test('errors: ApiError keeps its status; a bug is a 500 without internals; unknown route 404; wrong method 405', async () => {
  assert.deepEqual(await call('/teapot').then((r) => [r.status, r.body]), [409, { error: { code: 'conflict', message: 'no', details: { why: 'test' } } }]);
  const bug = await call('/bug');
  assert.equal(bug.status, 500);
  assert.equal(bug.body.error.code, 'internal');
  assert.doesNotMatch(JSON.stringify(bug.body), /secret/);
  const missing = await call('/nope');
  assert.deepEqual([missing.status, missing.body.error.code], [404, 'not_found']);
  const wrong = await call('/healthz', { method: 'DELETE' });
  assert.deepEqual([wrong.status, wrong.body.error.code, wrong.headers.get('allow')], [405, 'method_not_allowed', 'GET']);
});

test('GET replies carry an ETag; If-None-Match → 304; a cacheKey reply is served without the handler until the key changes', async () => {
  const first = await call('/cached');
  const etag = first.headers.get('etag') ?? assert.fail('no etag');
  assert.deepEqual(first.body, { version: 1, calls: 1 });
  const again = await call('/cached');
  assert.deepEqual(again.body, { version: 1, calls: 1 }, 'served from the reply cache');
  const notModified = await call('/cached', { headers: { 'if-none-match': etag } });
  assert.equal(notModified.status, 304);
  assert.equal(notModified.body, null);
  version = 2;
  const changed = await call('/cached', { headers: { 'if-none-match': etag } });
  assert.equal(changed.status, 200, 'a new key runs the handler and gives a new ETag');
  assert.deepEqual(changed.body, { version: 2, calls: 2 });
  assert.notEqual(changed.headers.get('etag'), etag);
  const plain = await call('/healthz');
  assert.equal((await call('/healthz', { headers: { 'if-none-match': `W/"x", ${plain.headers.get('etag')}` } })).status, 304, 'a list of tags');
});

test('the port is exclusive: another process cannot listen on it too (no silent SO_REUSEPORT sharing)', async () => {
  const http = new URL('./http.js', import.meta.url).href;
  const script = `import(${JSON.stringify(http)}).then((m) => m.startHttpServer({ routes: [], port: ${server.port} })).then(() => { console.log('BOUND'); process.exit(0); }, (e) => { console.log(e.message); process.exit(3); });`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(r.status, 3, r.stdout + r.stderr);
  assert.match(r.stdout, /cannot listen on 127\.0\.0\.1:\d+ \(port taken\?\)/);
});

/** One raw HTTP exchange over node:net: the bytes are written as given (in `parts`, a pause between them). */
function rawRequest(parts: readonly string[], port = server.port): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let got = '';
    socket.on('data', (d) => (got += d.toString('latin1')));
    socket.on('close', () => resolve(got));
    socket.on('error', () => undefined);
    void (async () => {
      for (const p of parts) {
        if (socket.destroyed) break;
        socket.write(p);
        await new Promise((r) => setTimeout(r, 30));
      }
      setTimeout(() => socket.end(), 300);
    })();
  });
}
const statusOf = (reply: string): number => Number(/^HTTP\/1\.1 (\d{3})/.exec(reply)?.[1] ?? 0);
const jsonOf = (reply: string): any => JSON.parse(reply.slice(reply.indexOf('\r\n\r\n') + 4));

test('broken percent-encoding in a path parameter → 400 bad_path, and the process stays up', async () => {
  for (const [method, path] of [
    ['GET', '/policies/%ZZ'],
    ['GET', '/policies/%'],
    ['DELETE', '/users/%E0%A4%A/roles/x'],
    ['POST', '/devices/%/retire'],
    ['GET', '/roles/%C0%AF/policies/%ED%A0%80'],
  ] as const) {
    const r = await call(path, { method, ...(method === 'POST' ? { body: '{}', headers: { 'content-type': 'application/json' } } : {}) });
    assert.equal(r.status, 400, `${method} ${path}`);
    assert.equal(r.body.error.code, 'bad_path');
    assert.ok('details' in r.body.error && typeof r.body.error.message === 'string');
  }
  // Raw bytes a client library would not send: still an answer, and the server serves on.
  const raw = await rawRequest(['GET /policies/%ZZ%00%ff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n']);
  assert.equal(statusOf(raw), 400, raw);
  assert.equal(jsonOf(raw).error.code, 'bad_path');
  assert.deepEqual((await call('/policies/a%20b')).body, { policy_id: 'a b' });
  assert.equal((await call('/healthz')).status, 200);
});

test('headers over the limit → 431 in the envelope; a head uWS cannot hold is closed cleanly; the server serves on', async () => {
  const head = (bytes: number): string => `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(bytes)}\r\nConnection: close\r\n\r\n`;
  assert.equal(statusOf(await rawRequest([head(2000)])), 200, 'a 2 KB header is fine');
  for (const bytes of [6 * 1024, 64 * 1024]) {
    const reply = await rawRequest([head(bytes)]);
    assert.equal(statusOf(reply), 431, `${bytes} B: ${reply.slice(0, 80)}`);
    assert.equal(jsonOf(reply).error.code, 'headers_too_large');
    assert.equal(jsonOf(reply).error.details.limit_bytes, 4096);
  }
  // Unknown routes and wrong methods too.
  assert.equal(statusOf(await rawRequest([head(6000).replace('/healthz', '/nope')])), 431);
  assert.equal(statusOf(await rawRequest([head(6000).replace('GET', 'DELETE')])), 431);
  // The same head arriving in two reads: this uWS build keeps 4 KiB of a partial head and closes
  // the connection past it (no reply). The server must still serve the next request.
  for (const bytes of [6 * 1024, 64 * 1024]) {
    const text = head(bytes);
    const reply = await rawRequest([text.slice(0, 100), text.slice(100)]);
    assert.ok(reply === '' || statusOf(reply) === 431, reply.slice(0, 80));
  }
  const r = await fetch(`${server.url}/healthz`);
  assert.equal(r.status, 200);
});

test('HEAD is answered without a body (405/404/431), so a keep-alive connection stays in step', async () => {
  for (const [path, status] of [
    ['/healthz', 405],
    ['/nope', 404],
    [`/healthz?x=${'y'.repeat(5000)}`, 431],
    [`/nope?x=${'y'.repeat(5000)}`, 431],
  ] as const) {
    const reply = await rawRequest([`HEAD ${path} HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`]);
    const [first, ...rest] = reply.split(/(?=HTTP\/1\.1 )/);
    assert.equal(statusOf(first ?? ''), status, reply.slice(0, 200));
    assert.ok((first ?? '').endsWith('\r\n\r\n'), `no body after the HEAD reply's headers: ${JSON.stringify(first)}`);
    assert.equal(rest.length, 1, reply);
    assert.equal(statusOf(rest[0]!), 200);
    assert.deepEqual(jsonOf(rest[0]!), { status: 'ok' });
  }
});

test('a request its handler does not answer in time gets a 503 timeout naming the limit; a late handler writes nothing; the server serves on', async () => {
  const logs: string[] = [];
  const replies: Array<[string, number]> = [];
  let lateFinished = false;
  const slow = await startHttpServer({
    requestTimeoutMs: 300,
    log: (line) => logs.push(line),
    onReply: (r, status) => replies.push([r.path, status]),
    routes: [
      { method: 'get', path: '/stuck', summary: 'never answers', tag: 't', access: 'public', handler: () => new Promise<never>(() => undefined) },
      {
        method: 'post',
        path: '/late',
        summary: 'answers after the deadline',
        tag: 't',
        access: 'public',
        handler: async () => {
          await new Promise((r) => setTimeout(r, 600));
          lateFinished = true;
          return { body: { late: true } };
        },
      },
      { method: 'get', path: '/ok', summary: 'in time', tag: 't', access: 'public', handler: async () => ({ body: { ok: true } }) },
      {
        method: 'get',
        path: '/waits',
        summary: 'waits on purpose, with a longer deadline of its own',
        tag: 't',
        access: 'public',
        timeoutMs: 2000,
        handler: async () => {
          await new Promise((r) => setTimeout(r, 500));
          return { body: { waited: true } };
        },
      },
    ],
  });
  try {
    const started = performance.now();
    const stuck = await fetch(`${slow.url}/stuck`);
    const took = performance.now() - started;
    assert.equal(stuck.status, 503);
    assert.equal(stuck.headers.get('retry-after'), '2');
    assert.deepEqual(await stuck.json(), {
      error: { code: 'timeout', message: 'the server took longer than 0.3 s to answer; try again shortly', details: { timeout_seconds: 0.3 } },
    });
    assert.ok(took >= 280 && took < 5000, `answered after ${Math.round(took)} ms`);

    const late = await fetch(`${slow.url}/late`, { method: 'POST' });
    assert.equal(late.status, 503);
    assert.equal(((await late.json()) as { error: { code: string } }).error.code, 'timeout');
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(lateFinished, 'the late handler ran to its end');

    const waits = await fetch(`${slow.url}/waits`);
    assert.equal(waits.status, 200, "its own deadline, not the server's");
    assert.deepEqual(await waits.json(), { waited: true });

    const ok = await fetch(`${slow.url}/ok`);
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { ok: true });
    assert.deepEqual(replies, [
      ['/stuck', 503],
      ['/late', 503],
      ['/waits', 200],
      ['/ok', 200],
    ]);
    assert.ok(
      logs.some((l) => l.includes('GET /stuck: no answer after 0.3 s')),
      logs.join('\n'),
    );
    assert.ok(
      logs.some((l) => l.includes('POST /late: no answer after 0.3 s')),
      logs.join('\n'),
    );
    await assert.rejects(startHttpServer({ routes: [], requestTimeoutMs: 0 }), /requestTimeoutMs must be a positive number/);
  } finally {
    slow.close();
  }
});

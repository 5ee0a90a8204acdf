/**
 * `/outputs` against the real api server: admins make, read, change and remove their
 * enterprise's webhooks; the secret is shown once; bad input is a 400 naming the field; other
 * accounts get 403 and other enterprises 404. Then an output made here receives a violation
 * through a real notifier, and its delivery log says so.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { alertsSubject, encodeAlerts } from '../core/live.js';
import { openOutputsBucket, outputKey, signature, SIGNATURE_HEADER, TIMESTAMP_HEADER } from '../core/outputs.js';
import { until } from '../core/testing/until.js';
import { briefAlert } from '../fixtures/briefEvents.js';
import { BRIEF } from '../fixtures/world.js';
import { Notifier } from '../pipeline/notifier.js';
import { startApiFixture } from './testing/apiFixture.js';

const fx = await startApiFixture();

test('admins make, read, change and remove outputs; the secret is shown once; bad input names its field', async () => {
  const made = await fx.call('POST', '/outputs', {
    as: 'admin@acme',
    body: { name: 'SOC webhook', url: 'https://soc.acme.example/hook', min_severity: 'critical', filters: { app_ids: [BRIEF.slack] } },
  });
  assert.equal(made.status, 201, made.text);
  const id = made.json.output_id as string;
  assert.match(id, /^out_/);
  assert.match(made.json.secret, /^whsec_/);
  assert.equal(made.json.secret_hint, `…${(made.json.secret as string).slice(-4)}`);
  assert.deepEqual(
    [made.json.format, made.json.min_severity, made.json.dedup_window_seconds, made.json.enabled, made.json.created_by],
    ['json', 'critical', 300, true, 'admin@acme'],
  );
  const read = await fx.call('GET', `/outputs/${id}`, { as: 'admin@acme' });
  assert.equal(read.status, 200);
  assert.equal(read.json.secret, undefined, 'the secret is not shown again');
  assert.deepEqual(read.json.filters, { app_ids: [BRIEF.slack], tower_ids: [], policy_ids: [] });
  const listed = await fx.call('GET', '/outputs', { as: 'admin@acme' });
  assert.deepEqual(
    (listed.json.outputs as Array<{ output_id: string }>).map((o) => o.output_id),
    [id],
  );

  const changed = await fx.call('PATCH', `/outputs/${id}`, { as: 'admin@acme', body: { format: 'slack', enabled: false, rotate_secret: true } });
  assert.equal(changed.status, 200, changed.text);
  assert.deepEqual([changed.json.format, changed.json.enabled, changed.json.name], ['slack', false, 'SOC webhook']);
  assert.notEqual(changed.json.secret, made.json.secret, 'a new secret, shown in this reply');

  for (const [body, field] of [
    [{ name: 'x', url: 'ftp://soc.example/hook' }, 'url'],
    [{ name: 'x', url: 'not a url' }, 'url'],
    [{ name: '', url: 'https://a.example' }, 'name'],
    [{ name: 'x', url: 'https://a.example', min_severity: 'urgent' }, 'min_severity'],
    [{ name: 'x', url: 'https://a.example', dedup_window_seconds: 86_401 }, 'dedup_window_seconds'],
    [{ name: 'x', url: 'https://a.example', secret: 'mine' }, ''],
  ] as const) {
    const r = await fx.call('POST', '/outputs', { as: 'admin@acme', body });
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
    assert.equal(r.json.error.code, 'validation_failed');
    if (field !== '') assert.ok(JSON.stringify(r.json.error.details).includes(field), r.text);
  }
  const unknownApp = await fx.call('POST', '/outputs', {
    as: 'admin@acme',
    body: { name: 'x', url: 'https://a.example', filters: { app_ids: ['no-such-app'] } },
  });
  assert.equal(unknownApp.status, 400);
  assert.equal(unknownApp.json.error.code, 'unknown_reference');
  assert.equal(unknownApp.json.error.details.field, 'filters.app_ids');

  assert.equal((await fx.call('DELETE', `/outputs/${id}`, { as: 'admin@acme' })).status, 204);
  assert.equal((await fx.call('GET', `/outputs/${id}`, { as: 'admin@acme' })).status, 404);
});

test('tenancy: another enterprise sees none of it and changes nothing; analysts and viewers are refused', async () => {
  const made = await fx.call('POST', '/outputs', { as: 'admin@acme', body: { name: 'Acme only', url: 'https://acme.example/hook' } });
  const id = made.json.output_id as string;
  for (const [method, path, body] of [
    ['GET', `/outputs/${id}`, undefined],
    ['PATCH', `/outputs/${id}`, { enabled: false }],
    ['DELETE', `/outputs/${id}`, undefined],
    ['GET', `/outputs/${id}/deliveries`, undefined],
  ] as const) {
    const r = await fx.call(method, path, { as: 'admin@globex', body });
    assert.equal(r.status, 404, `${method} ${path}: ${r.text}`);
  }
  const globexList = await fx.call('GET', '/outputs', { as: 'admin@globex' });
  assert.deepEqual(globexList.json.outputs, []);
  for (const as of ['analyst@acme', 'viewer@acme']) {
    assert.equal((await fx.call('GET', '/outputs', { as })).status, 403, as);
    assert.equal((await fx.call('POST', '/outputs', { as, body: { name: 'x', url: 'https://a.example' } })).status, 403, as);
  }
  const still = await fx.call('GET', `/outputs/${id}`, { as: 'admin@acme' });
  assert.equal(still.json.enabled, true);
  await fx.call('DELETE', `/outputs/${id}`, { as: 'admin@acme' });
});

test('an entry that does not read as an output: left out of the list, named by GET and PATCH (500 output_unreadable), removed by DELETE', async () => {
  const good = await fx.call('POST', '/outputs', { as: 'admin@acme', body: { name: 'Readable', url: 'https://acme.example/ok' } });
  assert.equal(good.status, 201, good.text);
  const kv = await openOutputsBucket(fx.nc, 1);
  const bad = 'out_handwritten';
  for (const [i, value] of ['{"not json', JSON.stringify({ output_id: bad, name: 42 })].entries()) {
    await kv.put(outputKey(BRIEF.acme, bad), value);
    const listed = await fx.call('GET', '/outputs', { as: 'admin@acme' });
    assert.equal(listed.status, 200, `case ${i}: ${listed.text}`);
    assert.deepEqual(
      (listed.json.outputs as Array<{ output_id: string }>).map((o) => o.output_id),
      [good.json.output_id],
      `case ${i}`,
    );
    for (const [method, body] of [
      ['GET', undefined],
      ['PATCH', { enabled: false }],
    ] as const) {
      const r = await fx.call(method, `/outputs/${bad}`, { as: 'admin@acme', body });
      assert.equal(r.status, 500, `case ${i} ${method}: ${r.text}`);
      assert.equal(r.json.error.code, 'output_unreadable');
      assert.deepEqual(r.json.error.details, { output_id: bad });
    }
  }
  // Another enterprise still sees nothing of it.
  assert.equal((await fx.call('GET', `/outputs/${bad}`, { as: 'admin@globex' })).status, 404);
  assert.equal((await fx.call('DELETE', `/outputs/${bad}`, { as: 'admin@globex' })).status, 404);
  assert.equal((await fx.call('DELETE', `/outputs/${bad}`, { as: 'admin@acme' })).status, 204);
  assert.equal((await fx.call('GET', `/outputs/${bad}`, { as: 'admin@acme' })).status, 404);
  await fx.call('DELETE', `/outputs/${good.json.output_id as string}`, { as: 'admin@acme' });
});

test('an output made through the api receives a violation through the notifier, signed, and its delivery log shows it', async () => {
  const bodies: Array<{ headers: Record<string, unknown>; body: string }> = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      bodies.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.end('ok');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const notifier = await Notifier.start({ nc: fx.nc, log: () => undefined });
  try {
    const made = await fx.call('POST', '/outputs', {
      as: 'admin@acme',
      body: { name: 'Receiver', url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, min_severity: 'low' },
    });
    assert.equal(made.status, 201, made.text);
    const id = made.json.output_id as string;
    await new Promise((r) => setTimeout(r, 300)); // the notifier's watch sees it
    const alert = { ...briefAlert('att:tower123:424242'), severity: 'high' };
    fx.nc.publish(alertsSubject(BRIEF.acme), encodeAlerts([alert]));
    await until(async () => bodies.length === 1, 10_000, 'the delivery');
    const ts = Number(bodies[0]!.headers[TIMESTAMP_HEADER]);
    assert.equal(bodies[0]!.headers[SIGNATURE_HEADER], signature(made.json.secret as string, ts, bodies[0]!.body));
    assert.equal(JSON.parse(bodies[0]!.body).alert.alert_id, 'att:tower123:424242');
    let log: Array<Record<string, unknown>> = [];
    await until(
      async () => {
        log = (await fx.call('GET', `/outputs/${id}/deliveries`, { as: 'admin@acme' })).json.deliveries;
        return log.length === 1;
      },
      5_000,
      'the delivery logged',
    );
    assert.deepEqual([log[0]!['alert_id'], log[0]!['status'], log[0]!['attempts'], log[0]!['http_status']], ['att:tower123:424242', 'delivered', 1, 200]);
    await fx.call('DELETE', `/outputs/${id}`, { as: 'admin@acme' });
  } finally {
    await notifier.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});

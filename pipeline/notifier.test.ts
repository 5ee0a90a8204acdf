/**
 * The notifier against a real nats-server and local HTTP receivers: alerts published as the
 * pipeline publishes them reach the enterprise's webhooks signed, at the right severities,
 * within their filters, one per (user, app, action) per window even across two notifiers; a
 * failing receiver is retried and logged, a hanging one slows nobody.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { alertsSubject, encodeAlerts } from '../core/live.js';
import type { Alert } from '../core/liveMessages.js';
import {
  type Delivery,
  DELIVERY_HEADER,
  newOutputSecret,
  openDeliveriesBucket,
  openOutputsBucket,
  type Output,
  outputKey,
  signature,
  SIGNATURE_HEADER,
  TIMESTAMP_HEADER,
  WINDOWS_BUCKET,
} from '../core/outputs.js';
import { openKvBucket } from '../core/nats/index.js';
import { withNats } from '../core/testing/natsFixture.js';
import { until } from '../core/testing/until.js';
import { Notifier } from './notifier.js';

const nats = await withNats();

interface Received {
  path: string;
  headers: IncomingMessage['headers'];
  body: string;
}

/** A webhook receiver: answers each path with `answer(path, n)` (n: requests to it so far), or never (null). */
async function receiver(answer: (path: string, n: number) => number | null = () => 200): Promise<{ url: string; got: Received[]; close(): Promise<void> }> {
  const got: Received[] = [];
  const counts = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      const n = (counts.get(path) ?? 0) + 1;
      counts.set(path, n);
      got.push({ path, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const status = answer(path, n);
      if (status === null) return; // never answers
      res.statusCode = status;
      res.end('ok');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    got,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

let n = 0;
function alert(fields: Partial<Alert> = {}): Alert {
  n++;
  return {
    alert_id: `att:tower123:${n}`,
    enterprise_id: 'acme',
    ts: Date.now(),
    user_id: 'john',
    user_name: 'John Doe',
    device_id: 'device123',
    app_id: 'slack',
    app_name: 'Slack',
    action: 'Upload File',
    tower_id: 'tower123',
    tower_location: 'New York City',
    region: 'US-NY',
    lat: null,
    lon: null,
    carrier: 'att',
    policy_id: 'policy123',
    policy_name: 'Admin Policy',
    rule_id: null,
    severity: 'high',
    remediation: null,
    policy_version: 'v1',
    ...fields,
  };
}

describe('notifier', () => {
  let nc: NatsConnection;
  let outputs: KV;
  let deliveries: KV;
  let notifier: Notifier;
  let hook: Awaited<ReturnType<typeof receiver>>;
  const logged: string[] = [];
  const put = async (o: Partial<Output> & Pick<Output, 'output_id' | 'url'>): Promise<Output> => {
    const output: Output = {
      enterprise_id: 'acme',
      name: o.output_id,
      type: 'webhook',
      format: 'json',
      secret: newOutputSecret(),
      min_severity: 'high',
      filters: { app_ids: [], tower_ids: [], policy_ids: [] },
      dedup_window_seconds: 0,
      enabled: true,
      created_at: Date.now(),
      created_by: 'test',
      updated_at: Date.now(),
      ...o,
    };
    await outputs.put(outputKey(output.enterprise_id, output.output_id), JSON.stringify(output));
    return output;
  };
  const publish = (alerts: Alert[], enterprise = 'acme'): void => nc.publish(alertsSubject(enterprise), encodeAlerts(alerts));
  const at = (path: string): Received[] => hook.got.filter((r) => r.path === path);
  const logOf = async (o: Output): Promise<Delivery[]> => {
    const out: Delivery[] = [];
    for await (const e of await deliveries.history({ key: outputKey(o.enterprise_id, o.output_id) })) if (e.operation === 'PUT') out.push(e.json<Delivery>());
    return out;
  };

  before(async () => {
    nc = await nats.connect();
    outputs = await openOutputsBucket(nc, 1);
    deliveries = await openDeliveriesBucket(nc, 1);
    hook = await receiver((path, count) => {
      if (path === '/flaky') return count <= 2 ? 503 : 200;
      if (path === '/down') return 500;
      if (path === '/gone') return 404;
      if (path === '/hang') return null;
      return 200;
    });
    notifier = await Notifier.start({ nc, log: (l) => void logged.push(l), retryDelaysMs: [20, 20, 20], attemptTimeoutMs: 300 });
  });
  after(async () => {
    await notifier?.close();
    await hook?.close();
  });

  it('signs each body with the output secret; severities, notify rules and filters decide what is sent', async () => {
    const o = await put({ output_id: 'out_json', url: `${hook.url}/json` });
    const slackOnly = await put({
      output_id: 'out_filter',
      url: `${hook.url}/filter`,
      min_severity: 'low',
      filters: { app_ids: ['zoom'], tower_ids: [], policy_ids: [] },
    });
    await new Promise((r) => setTimeout(r, 200)); // the watch sees the outputs
    const sent = [
      alert({ severity: 'medium' }), // below high: not sent
      alert({ severity: 'critical' }),
      alert({ severity: 'low', remediation: 'notify' }), // the rule asks for a notification
      alert({ severity: 'high', app_id: 'zoom', app_name: 'Zoom', action: 'Start Meeting' }),
    ];
    publish(sent);
    publish([alert({ enterprise_id: 'globex', severity: 'critical' })], 'globex'); // another enterprise's
    await until(async () => at('/json').length >= 3 && at('/filter').length >= 1, 10_000, 'the deliveries');
    await notifier.idle();
    assert.deepEqual(
      at('/json')
        .map((r) => (JSON.parse(r.body) as { alert: { alert_id: string } }).alert.alert_id)
        .sort(),
      [sent[1]!, sent[2]!, sent[3]!].map((a) => a.alert_id).sort(),
    );
    assert.deepEqual(
      at('/filter').map((r) => (JSON.parse(r.body) as { alert: { app_id: string } }).alert.app_id),
      ['zoom'],
    );
    for (const r of at('/json')) {
      const ts = Number(r.headers[TIMESTAMP_HEADER]);
      assert.ok(Math.abs(ts - Date.now() / 1000) < 60);
      assert.equal(r.headers[SIGNATURE_HEADER], signature(o.secret, ts, r.body), 'the signature verifies');
      assert.notEqual(r.headers[SIGNATURE_HEADER], signature(slackOnly.secret, ts, r.body), 'and only with its own secret');
      assert.match(String(r.headers[DELIVERY_HEADER]), /^[0-9a-f-]{36}$/);
      const body = JSON.parse(r.body) as Record<string, unknown>;
      assert.equal(body['type'], 'violation');
      assert.equal(body['enterprise_id'], 'acme');
    }
    const log = await logOf(o);
    assert.equal(log.length, 3);
    assert.ok(log.every((d) => d.status === 'delivered' && d.attempts === 1 && d.http_status === 200));
  });

  it('an entry that is not an output and an alert payload that does not decode are skipped; the other outputs keep working', async () => {
    await outputs.put('acme.out_garbage', new Uint8Array([0xc1, 0xff, 0x00, 0x7b]));
    await outputs.put('acme.out_shape', JSON.stringify({ output_id: 'out_shape', url: 42 }));
    const good = await put({ output_id: 'out_after_bad', url: `${hook.url}/after-bad`, min_severity: 'critical' });
    await new Promise((r) => setTimeout(r, 200)); // the watch sees them
    const before = notifier.counters.alerts;
    nc.publish(alertsSubject('acme'), new Uint8Array([0xde, 0xad, 0xbe, 0xef]));
    const sent = alert({ severity: 'critical', app_id: 'after-bad' });
    publish([sent]);
    await until(async () => at('/after-bad').length >= 1, 10_000, 'the delivery after the bad entries');
    await notifier.idle();
    assert.deepEqual(
      at('/after-bad').map((r) => (JSON.parse(r.body) as { alert: { alert_id: string } }).alert.alert_id),
      [sent.alert_id],
    );
    assert.equal(notifier.counters.alerts - before, 1, 'the undecodable payload is no alert');
    assert.ok(logged.some((l) => l.includes('acme.out_garbage') && l.includes('is not an output')));
    assert.ok(logged.some((l) => l.includes('acme.out_shape') && l.includes('is not an output')));
    assert.ok(!logged.some((l) => l.includes('watching the outputs failed')), 'the watch never restarted');
    assert.equal((await logOf(good)).length, 1);
    await outputs.delete('acme.out_garbage');
    await outputs.delete('acme.out_shape');
    await outputs.delete(outputKey(good.enterprise_id, good.output_id));
  });

  it('100 repeated violations of one (user, app, action) are one notification per window, across two notifiers; the next one counts what was held back', async () => {
    const o = await put({ output_id: 'out_window', url: `${hook.url}/window`, dedup_window_seconds: 2, format: 'slack' });
    const nc2 = await nats.connect();
    const second = await Notifier.start({ nc: nc2, log: (l) => void logged.push(l) });
    try {
      await new Promise((r) => setTimeout(r, 200));
      for (let i = 0; i < 100; i++)
        publish([alert({ user_id: 'streamer', user_name: 'Video Streamer', app_id: 'youtube', app_name: 'YouTube', action: 'Stream Video' })]);
      publish([alert({ user_id: 'streamer', user_name: 'Video Streamer', app_id: 'youtube', app_name: 'YouTube', action: 'Upload Video' })]);
      await until(async () => at('/window').length >= 2, 10_000, 'two notifications');
      await Promise.all([notifier.idle(), second.idle()]);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(at('/window').length, 2, 'one per action');
      assert.ok(notifier.counters.alerts > 0 && second.counters.alerts > 0, 'both notifiers took alerts (one queue group)');
      assert.equal(notifier.counters.suppressed + second.counters.suppressed >= 99, true);
      const text = (JSON.parse(at('/window')[0]!.body) as { text: string }).text;
      assert.match(text, /^\[HIGH\] Video Streamer: YouTube (Stream|Upload) Video at tower123 \(New York City\), denied by Admin Policy$/);
      // After the window, the next one reports the 99 held back.
      await new Promise((r) => setTimeout(r, 2_100));
      publish([alert({ user_id: 'streamer', user_name: 'Video Streamer', app_id: 'youtube', app_name: 'YouTube', action: 'Stream Video' })]);
      await until(async () => at('/window').length === 3, 10_000, 'the next window');
      assert.match((JSON.parse(at('/window')[2]!.body) as { text: string }).text, /\(\+99 more since the last notification\)$/, logged.join('\n'));
      assert.equal((await logOf(o)).length, 3);
    } finally {
      await second.close();
      await nc2.close();
    }
  });

  it('a dedup window entry that is not a window is replaced by a new window, not a reason to stop notifying', async () => {
    const o = await put({ output_id: 'out_badwin', url: `${hook.url}/badwin`, dedup_window_seconds: 600 });
    await new Promise((r) => setTimeout(r, 200));
    const same = (): Alert => alert({ user_id: 'u_badwin', app_id: 'badwin', action: 'Upload' });
    publish([same()]);
    await until(async () => at('/badwin').length === 1, 10_000, 'the first notification');
    await notifier.idle();
    // The window is open for 10 minutes; its entry is then overwritten with something else.
    const windows = await openKvBucket(nc, WINDOWS_BUCKET);
    const keys: string[] = [];
    for await (const k of await windows.keys(`${o.output_id}.>`)) keys.push(k);
    assert.equal(keys.length, 1);
    await windows.put(keys[0]!, 'not a window');
    publish([same()]);
    await until(async () => at('/badwin').length === 2, 10_000, 'a notification through the unreadable window');
    await notifier.idle();
    assert.deepEqual((await windows.get(keys[0]!))?.json<{ suppressed: number }>().suppressed, 0, 'a new window in its place');
    publish([same()]);
    await notifier.idle();
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(at('/badwin').length, 2, 'and the new window holds the next one back');
  });

  it('a receiver that fails is retried with backoff; one that refuses (4xx) is not; both are logged', async () => {
    const flaky = await put({ output_id: 'out_flaky', url: `${hook.url}/flaky` });
    const down = await put({ output_id: 'out_down', url: `${hook.url}/down` });
    const gone = await put({ output_id: 'out_gone', url: `${hook.url}/gone` });
    await new Promise((r) => setTimeout(r, 200));
    publish([alert()]);
    await until(async () => (await logOf(flaky)).length === 1 && (await logOf(down)).length === 1 && (await logOf(gone)).length === 1, 10_000, 'three logged');
    const [f] = await logOf(flaky);
    assert.deepEqual([f!.status, f!.attempts, f!.http_status, f!.error], ['delivered', 3, 200, null]);
    const [d] = await logOf(down);
    assert.deepEqual([d!.status, d!.attempts, d!.http_status, d!.error], ['failed', 4, 500, 'the receiver answered 500']);
    const [g] = await logOf(gone);
    assert.deepEqual([g!.status, g!.attempts, g!.http_status], ['failed', 1, 404]);
  });

  it('a receiver that never answers slows no other output', async () => {
    for (const id of ['out_flaky', 'out_down', 'out_gone', 'out_window', 'out_filter']) await outputs.delete(outputKey('acme', id));
    const hang = await put({ output_id: 'out_hang', url: `${hook.url}/hang` });
    await put({ output_id: 'out_fast', url: `${hook.url}/fast` });
    await new Promise((r) => setTimeout(r, 200));
    const started = Date.now();
    const burst = Array.from({ length: 30 }, () => alert({ user_id: `u${n}` }));
    publish(burst);
    await until(async () => at('/fast').length === 30, 5_000, 'every alert at the fast receiver');
    const fastMs = Date.now() - started;
    // Each hung attempt waits out its 300 ms timeout, 4 attempts each, 4 at a time.
    assert.ok(fastMs < 2_000, `the fast receiver had them all in ${fastMs} ms`);
    await until(async () => (await logOf(hang)).length === 30, 30_000, 'the hung deliveries logged');
    assert.ok((await logOf(hang)).every((x) => x.status === 'failed' && x.http_status === null && /aborted|timeout/i.test(x.error ?? '')));
  });
});

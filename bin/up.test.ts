import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { connect as netConnect, createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { ControlPlaneStore } from '../core/controlPlane/index.js';
import { connectNats, USAGE_STREAM } from '../core/nats/index.js';
import { decodeUsage } from '../core/wire.js';
import WebSocket from 'ws';
import { briefEvent, publishFrame } from '../fixtures/briefEvents.js';
import { BRIEF } from '../fixtures/world.js';
import { HOST, startUp, upEnv, type Up } from './upHarness.js';

/** `first` appears in `text`, and before `second` if that appears at all. */
function before(text: string, first: string, second: string): boolean {
  const a = text.indexOf(first);
  const b = text.indexOf(second);
  return a !== -1 && (b === -1 || a < b);
}

function portOf(url: string): number {
  return Number(new URL(url).port);
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = netConnect({ host: HOST, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

/** Signs in as the demo's Acme admin; a failure says what `up` printed. */
async function signIn(up: Up): Promise<string> {
  let status: number | string;
  try {
    const r = await fetch(`${up.apiUrl}/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'admin@acme', password: 'towerwatch-demo' }),
      signal: AbortSignal.timeout(60_000),
    });
    if (r.status === 200) return ((await r.json()) as { access_token: string }).access_token;
    status = `${r.status} ${await r.text()}`;
  } catch (err) {
    status = err instanceof Error ? `${err.message}${err.cause instanceof Error ? ` (${err.cause.message})` : ''}` : String(err);
  }
  assert.fail(`sign-in failed: ${status}; stderr:\n${up.stderr.slice(-4000)}`);
}

// Independent processes on ports and data dirs of their own: two side by side (most of their
// time is a child compiling policies), not all of them at once on two cores.
describe('towerwatch up', { concurrency: 2 }, () => {
  test('up starts nats-server, seeds the control plane and publishes; SIGINT stops it all', async () => {
    const { env, dataDir } = await upEnv();
    const up = startUp(['--rate', '2000'], env);
    // Compiling six enterprises' policies comes before the first progress line: allow for a slow machine.
    await up.waitForOutput([/^up: simulator publishing 2000 events\/s/m, /^simulate: [\d,]+ events in /m], 60_000);
    const port = portOf(up.natsUrl);
    assert.ok(up.stderr.includes(`up: nats-server nats://${HOST}:${port} (JetStream store in ${join(dataDir, 'nats')})`), up.stderr);
    assert.match(up.stderr, /^up: streams USAGE \(created, R1\)/m);
    assert.match(up.stderr, /^up: seeded the control plane: \d+ written/m);

    const nc = await connectNats(`nats://${HOST}:${port}`, 'up test', { maxReconnectAttempts: 0 });
    try {
      const jsm = await jetstreamManager(nc);
      const usage = await jsm.streams.info(USAGE_STREAM);
      assert.ok(usage.state.messages > 0, "the simulator's frames are in USAGE");
      const store = await ControlPlaneStore.open(nc);
      assert.equal((await store.get('enterprise', BRIEF.acme, BRIEF.acme))?.value.name, 'Acme Corp');
    } finally {
      await nc.close();
    }

    const signalled = performance.now();
    up.child.kill('SIGINT');
    const exit = await up.waitForExit(15_000);
    const tookMs = performance.now() - signalled;
    assert.deepEqual(exit, { code: 0, signal: null }, up.stderr);
    // Loose: the pipeline finishes its batches first, and CI machines are shared.
    assert.ok(tookMs < 10_000, `exited ${Math.round(tookMs)} ms after SIGINT`);
    assert.match(up.stderr, /^up: stopping/m);
    assert.match(up.stderr, /^up: sent [\d,]+ events in /m);
    assert.equal(await accepts(port), false, 'nats-server is stopped with it');
    assert.ok(existsSync(join(dataDir, 'nats', 'jetstream')), 'the JetStream store is kept in TOWERWATCH_DATA_DIR');
  });

  test('simulator → pipeline → api → socket: live violations, and a device the towers discover is onboarded and enforced', async () => {
    const { env } = await upEnv();
    const up = startUp(['--rate', '2000'], env);
    await up.waitForOutput([/^up: api http:/m, /^up: sign in as admin@acme/m], 60_000);
    const api = up.apiUrl;
    const apiPort = portOf(api);
    const port = portOf(up.natsUrl);
    assert.equal(api, `http://${HOST}:${apiPort}`);
    assert.match(up.stderr, /password towerwatch-demo/);
    assert.match(up.stderr, /^pipeline: discovery worker consuming DISCOVERY/m);
    const access_token = await signIn(up);
    const call = async (method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> => {
      const r = await fetch(`${api}${path}`, {
        method,
        headers: { authorization: `Bearer ${access_token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: r.status, json: r.status === 204 ? null : await r.json() };
    };
    const ws = new WebSocket(`ws://${HOST}:${apiPort}/ws/alerts?token=${access_token}`);
    const alerts: Array<Record<string, unknown>> = [];
    // What the socket went through, for a failure's message.
    const socketLog: string[] = [];
    ws.on('open', () => socketLog.push('open'));
    ws.on('error', (e) => socketLog.push(`error: ${e.message}`));
    ws.on('close', (code, reason) => socketLog.push(`close ${code} ${reason.toString()}`));
    const discovered: Array<{ device: { id: string; model: string; first_tower_id: string; carrier_id: string } }> = [];
    const blocks: Array<{ device_id: string; tower_id: string; at: number }> = [];
    ws.on('message', (d) => {
      const m = JSON.parse(d.toString()) as Record<string, unknown>;
      if (m['type'] === 'alert') alerts.push(m);
      if (m['type'] === 'device.discovered') discovered.push(m as never);
      if (m['type'] === 'remediation' && m['action_name'] === 'Block Device' && m['status'] === 'success')
        blocks.push({ device_id: String(m['device_id']), tower_id: String(m['tower_id']), at: Date.now() });
    });
    const nc = await connectNats(`nats://${HOST}:${port}`, 'up test', { maxReconnectAttempts: 0 });
    // Every event the simulated towers send, as it is published: what a block must stop.
    const sent: Array<{ device: string; tower: string; at: number }> = [];
    nc.subscribe('usage.>', {
      callback: (_e, m) => {
        const r = decodeUsage(m.data);
        if (r.ok) for (const e of r.events) sent.push({ device: e.device, tower: e.tower, at: Date.now() });
      },
    });
    try {
      const waitFor = async (what: string, ms: number, cond: () => boolean | Promise<boolean>): Promise<void> => {
        const deadline = Date.now() + ms;
        while (!(await cond())) {
          if (Date.now() > deadline) assert.fail(`${what}: not within ${ms / 1000} s; socket: ${socketLog.join(', ') || 'no event'}; stderr:\n${up.stderr}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      };
      await waitFor('an alert on the socket', 60_000, () => alerts.length > 0);
      const a = alerts[0]!;
      for (const k of ['alert_id', 'user_id', 'user_name', 'app_name', 'action', 'policy_name', 'severity', 'timestamp'])
        assert.ok(typeof a[k] === 'string' && a[k] !== '', `${k} in ${JSON.stringify(a)}`);
      assert.equal((await call('GET', '/dashboard/alerts?limit=500')).status, 200);

      // The simulator's towers report new Acme phones now and then (about one every 10 s at this rate).
      await waitFor('a device.discovered message', 90_000, () => discovered.length > 0);
      const found = discovered[0]!.device;
      await waitFor('the device in GET /devices/discovered', 10_000, async () =>
        (await call('GET', '/devices/discovered?limit=500')).json.devices.some((d: { id: string }) => d.id === found.id),
      );
      const onboarded = await call('POST', '/devices', { device_id: found.id, user_id: BRIEF.john });
      assert.equal(onboarded.status, 201, JSON.stringify(onboarded.json));
      assert.equal(onboarded.json.model, found.model);
      // Its next usage is John's: the brief's upload that his Admin Policy denies (event ids far above the simulator's).
      const js = jetstream(nc);
      let eventId = 9_000_000_000;
      let lastSent = 0;
      await waitFor('the onboarded device enforced', 30_000, async () => {
        // Once a second with a new id: an event that raced the onboarding is (rightly) unregistered.
        if (Date.now() - lastSent > 1000) {
          lastSent = Date.now();
          await publishFrame(js, 'att', BRIEF.nycTower, [briefEvent(++eventId, { device: found.id })]);
        }
        return alerts.some((x) => x['device_id'] === found.id && x['user_id'] === BRIEF.john && x['policy_name'] === 'Admin Policy');
      });

      // The loop closed: Acme's block_device rule fires, the tower acks, and the device's traffic there stops.
      await waitFor('an automatic Block Device that succeeded', 60_000, () => blocks.length > 0);
      const block = blocks[0]!;
      const carriedBefore = sent.filter((e) => e.device === block.device_id && e.tower === block.tower_id && e.at < block.at).length;
      await new Promise((r) => setTimeout(r, 8000));
      // A frame already on its way when the block landed may still arrive: allow a second.
      const carriedAfter = sent.filter((e) => e.device === block.device_id && e.tower === block.tower_id && e.at > block.at + 1000);
      assert.ok(carriedBefore > 0, `the blocked device was sending at ${block.tower_id} before`);
      assert.equal(carriedAfter.length, 0, `${block.device_id} still sent ${carriedAfter.length} events at ${block.tower_id} after its block`);
      assert.ok(
        sent.some((e) => e.tower === block.tower_id && e.at > block.at + 1000),
        `the tower ${block.tower_id} carries others meanwhile`,
      );
    } finally {
      ws.close();
      await nc.close();
    }
    up.child.kill('SIGINT');
    assert.deepEqual(await up.waitForExit(15_000), { code: 0, signal: null }, up.stderr);
    assert.equal(await accepts(apiPort), false, 'the api stops with it');
  });

  test("up --ignoring-towers '*': the simulated towers ack blocks but carry on, and the blocks are found ineffective and announced", async () => {
    const { env } = await upEnv();
    const up = startUp(['--rate', '2000', '--ignoring-towers', '*'], {
      ...env,
      TOWERWATCH_BLOCK_PROOF_GRACE_SECONDS: '1',
      TOWERWATCH_BLOCK_SWEEP_SECONDS: '1',
    });
    await up.waitForOutput([/^up: api http:/m, /^up: sign in as admin@acme/m], 60_000);
    const api = up.apiUrl;
    const access_token = await signIn(up);
    const ws = new WebSocket(`ws://${HOST}:${portOf(api)}/ws/alerts?token=${access_token}`);
    const ineffective: Array<Record<string, unknown>> = [];
    ws.on('message', (d) => {
      const m = JSON.parse(d.toString()) as Record<string, unknown>;
      if (m['type'] === 'block.ineffective') ineffective.push(m);
    });
    try {
      const deadline = Date.now() + 90_000;
      while (ineffective.length === 0) {
        if (Date.now() > deadline) assert.fail(`no block.ineffective within 90 s; stderr:\n${up.stderr.slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      const m = ineffective[0]!;
      assert.ok(Number(m['events_since']) > 0, JSON.stringify(m));
      const r = await fetch(`${api}/blocks/${String(m['block_id'])}`, { headers: { authorization: `Bearer ${access_token}` } });
      assert.equal(r.status, 200);
      const block = (await r.json()) as Record<string, unknown>;
      assert.equal(block['status'], 'ineffective');
      assert.ok(Number(block['events_since']) >= Number(m['events_since']));
      assert.equal(block['device_id'], m['device_id']);
      assert.match(up.stderr, /^remediator: block bk_[0-9a-f]+ \(.*\) is ineffective: \d+ events since its grace period ended/m);
      const listed = await fetch(`${api}/blocks?status=ineffective`, { headers: { authorization: `Bearer ${access_token}` } });
      assert.ok(((await listed.json()) as { blocks: Array<{ block_id: string }> }).blocks.some((b) => b.block_id === m['block_id']));
    } finally {
      ws.close();
    }
    up.child.kill('SIGINT');
    assert.deepEqual(await up.waitForExit(15_000), { code: 0, signal: null }, up.stderr);
  });

  test('up exits 1 saying so when the NATS port is taken', async () => {
    const { env } = await upEnv();
    const squatter = createServer();
    await new Promise<void>((resolve, reject) => {
      squatter.once('error', reject);
      squatter.listen(0, HOST, resolve);
    });
    const port = (squatter.address() as AddressInfo).port;
    try {
      const up = startUp(['--no-simulator'], { ...env, TOWERWATCH_NATS_PORT: String(port) });
      const exit = await up.waitForExit(15_000);
      assert.deepEqual(exit, { code: 1, signal: null }, up.stderr);
      assert.match(up.stderr, new RegExp(`port ${port} is already in use`));
      assert.match(up.stderr, /TOWERWATCH_NATS_PORT/, 'says how to choose another');
    } finally {
      await new Promise<void>((resolve) => squatter.close(() => resolve()));
    }
  });

  test('up --no-simulator gets ready and stops cleanly on SIGTERM', async () => {
    const { env } = await upEnv();
    const up = startUp(['--no-simulator'], env);
    await up.waitForOutput([/^up: ready; no simulator/m], 15_000);
    const port = portOf(up.natsUrl);
    assert.equal(await accepts(port), true);

    up.child.kill('SIGTERM');
    const exit = await up.waitForExit(15_000);
    assert.deepEqual(exit, { code: 0, signal: null }, up.stderr);
    assert.doesNotMatch(up.stderr, /^simulate:/m, 'no traffic published');
    assert.equal(await accepts(port), false, 'nats-server is stopped with it');
  });

  test('Ctrl-C in a terminal (SIGINT to the whole process group, nats-server too) stops up', async () => {
    const { env } = await upEnv();
    const up = startUp(['--no-simulator'], env);
    await up.waitForOutput([/^up: ready; no simulator/m], 15_000);
    const port = portOf(up.natsUrl);
    assert.ok(up.child.pid !== undefined);
    process.kill(-up.child.pid, 'SIGINT');
    const exit = await up.waitForExit(15_000);
    assert.deepEqual(exit, { code: 0, signal: null }, up.stderr);
    assert.equal(await accepts(port), false);
  });

  test('a SIGTERM during start-up (before "ready") still stops up --no-simulator', async () => {
    const { env } = await upEnv();
    const up = startUp(['--no-simulator'], env);
    // Once the streams exist the signal handlers are installed, and the seed is still to come:
    // the signal lands while the control plane is being seeded. (Not earlier: until its handlers
    // are installed, a signal kills `up` outright and leaves its nats-server running.)
    await up.waitForOutput([/^up: streams /m], 15_000);
    const port = portOf(up.natsUrl);
    up.child.kill('SIGTERM');
    const exit = await up.waitForExit(15_000);
    assert.deepEqual(exit, { code: 0, signal: null }, up.stderr);
    assert.ok(before(up.stderr, 'up: stopping', 'up: ready'), `the signal should land during start-up:\n${up.stderr}`);
    assert.equal(await accepts(port), false, 'nats-server is stopped with it');
  });
});

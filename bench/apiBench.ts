/**
 * `towerwatch bench api`: the api under load on this machine. A real nats-server, embedded
 * ClickHouse holding `--events` generated events (inserted by ClickHouse itself from
 * numbers(), projections built as they are written), the api in this process, and the load
 * from a child process: autocannon on a cached GET (200 and 304) and on /dashboard/metrics,
 * then alert fan-out to `--sockets` WebSocket clients.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MAX_DECISIONS_PER_REQUEST } from '../api/routes/decisions.js';
import { startApiServer } from '../api/server.js';
import { migrate, openClickHouse } from '../core/clickhouse/index.js';
import { ControlPlaneStore } from '../core/controlPlane/index.js';
import { alertsSubject, encodeAlerts } from '../core/live.js';
import { connectNats, startNatsServer } from '../core/nats/index.js';
import { seedDemoAccounts } from '../fixtures/accounts.js';
import { briefAlert } from '../fixtures/briefEvents.js';
import { seedWorld } from '../fixtures/seed.js';
import { BRIEF, generateWorld, type World } from '../fixtures/world.js';
import { worldPolicyInputs } from '../fixtures/worldPolicies.js';
import { startPipelineService } from '../pipeline/service.js';
import { machine, writeResults } from './benchReport.js';
import { runSimulator } from './e2e.js';
import { rawClassScan } from './previewBench.js';
import { startRawUws } from './rawUws.js';

export interface ApiBenchOptions {
  events: number;
  durationS: number;
  connections: number;
  sockets: number;
  alerts: number;
  /** Alerts per second published for the fan-out. */
  alertRate: number;
  /** HTTP load generator. */
  client: 'wrk' | 'autocannon';
  /**
   * Events/s the simulator publishes, through a pipeline in this process, while
   * /dashboard/alerts is measured once more; 0 skips that run. @default 0
   */
  ingestRate?: number;
  log: (line: string) => void;
}

const CLIENT = fileURLToPath(new URL('./apiLoadClient.js', import.meta.url));
const PASSWORD = 'bench-password';

function runClient(job: unknown, onReady?: (send: (line: string) => void) => void): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLIENT, JSON.stringify(job)], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      out += c;
      if (onReady && out.includes('ready\n')) {
        out = out.replace('ready\n', '');
        const ready = onReady;
        onReady = undefined;
        ready((line) => child.stdin.write(`${line}\n`));
      }
    });
    child.once('close', (code) => {
      if (code !== 0) return reject(new Error(`load client exited ${code}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>);
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  });
}

/**
 * Generated history: events spread over the last 7 days across the world's acme devices, 5 %
 * violations. Their stream_seq is 0, which no JetStream message has: a pipeline storing live
 * traffic beside them must not take its messages for redeliveries already stored.
 */
export async function fillHistory(ch: Awaited<ReturnType<typeof openClickHouse>>, events: number, log: (l: string) => void): Promise<void> {
  const t = performance.now();
  const db = ch.database;
  const week = 7 * 24 * 3600 * 1000;
  const common = `
    number AS n,
    fromUnixTimestamp64Milli(toInt64(toUnixTimestamp64Milli(now64(3)) - (n * 7919) % ${week}), 'UTC') AS t,
    ['acme','globex','acme','acme'][1 + n % 4] AS ent,
    ['tower123','tower124','tower125','tower126','tower127','tower128'][1 + intDiv(n, 7) % 6] AS tower,
    concat('user', toString(123 + n % 25)) AS uid,
    ['Slack','Zoom','Microsoft Teams','WhatsApp','Dropbox','Gmail','YouTube','GitHub'][1 + intDiv(n, 3) % 8] AS app`;
  await ch.client.command({
    query: `INSERT INTO ${db}.app_usage (enterprise_id, ts, carrier, tower_id, event_id, stream_seq, device_id, user_id, user_name, app_id, app_name, app_category, action_id, action_name, bytes_up, bytes_down, verdict, policy_id, policy_name, rule_id, severity, remediation, policy_version, role_ids, region, os, os_version, decision_inputs)
      SELECT ent, t, 'att', tower, n, 0, concat('dev', toString(n % 500)), uid, concat('User ', uid), lower(app), app, 'messaging', 'send_message', 'Send Message', n % 5000, n % 20000,
        if(n % 20 = 0, 'deny', 'allow'), 'policy123', 'Admin Policy', '', if(n % 20 = 0, 'high', ''), '', 'bench',
        concat('role', toString(123 + n % 3)), 'US-NY', if(n % 2 = 0, 'iOS', 'Android'), '17.1', 1
      FROM (SELECT ${common} FROM numbers(${events}))`,
    clickhouse_settings: { max_insert_threads: '2' },
  });
  await ch.client.command({
    query: `INSERT INTO ${db}.violations (alert_id, enterprise_id, ts, carrier, tower_id, tower_location, region, event_id, stream_seq, device_id, user_id, user_name, app_id, app_name, action_id, action_name, policy_id, policy_name, rule_id, severity, remediation, policy_version)
      SELECT concat('att:', tower, ':', toString(n)), ent, t, 'att', tower, 'New York City', 'US-NY', n, 0, concat('dev', toString(n % 500)), uid, concat('User ', uid), lower(app), app, 'send_message', 'Send Message', 'policy123', 'Admin Policy', '', 'high', '', 'bench'
      FROM (SELECT ${common} FROM numbers(${events})) WHERE n % 20 = 0`,
  });
  log(
    `bench api: ${events.toLocaleString('en-US')} events (${(events / 20).toLocaleString('en-US')} violations) written in ${((performance.now() - t) / 1000).toFixed(1)} s`,
  );
}

export async function runApiBench(opts: ApiBenchOptions): Promise<Record<string, unknown>> {
  const dir = await mkdtemp(join(tmpdir(), 'tw-bench-api-'));
  const server = await startNatsServer({ storeDir: join(dir, 'nats') });
  const nc = await connectNats(server.url, 'bench api');
  const ch = await openClickHouse({ clickhouseUrl: null, dataDir: dir });
  try {
    await migrate(ch, { retentionDays: 30 });
    const store = await ControlPlaneStore.open(nc);
    const world = generateWorld({ seed: 42 });
    await seedWorld(store, world);
    await seedDemoAccounts(store, PASSWORD);
    await fillHistory(ch, opts.events, opts.log);
    /**
     * `measure` while the simulator publishes at `rate` and a pipeline in this process (the
     * same embedded engine) stores it: the dashboard read beside live inserts.
     */
    const underIngest = async (rate: number, measure: () => Promise<Record<string, unknown>>): Promise<Record<string, unknown>> => {
      const service = await startPipelineService({
        config: { clickhouseUrl: null, dataDir: dir, retentionDays: 30 },
        nc,
        natsUrl: server.url,
        log: opts.log,
        statusEverySeconds: 0,
        pipeline: {},
        remediator: false,
      });
      try {
        await service.pipeline.ready();
        let simulatorPid = 0;
        const simulator = runSimulator(server.url, { events: Math.ceil(rate * (opts.durationS + 60)), rate, frameSize: 1000 }, (pid) => (simulatorPid = pid));
        let measured = false;
        simulator.catch((err: unknown) => {
          // Killed below once measured; a simulator that fails before is reported.
          if (!measured) opts.log(`bench api: the simulator failed: ${err instanceof Error ? err.message : String(err)}`);
        });
        // The simulator compiles every enterprise's policies before its first event.
        const deadline = Date.now() + 60_000;
        while (service.pipeline.counters.events === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
        await new Promise((r) => setTimeout(r, 1000)); // past the first batches
        const before = service.pipeline.counters.events;
        const t0 = performance.now();
        const r = await measure();
        const stored = service.pipeline.counters.events - before;
        r['ingest_events_per_s'] = Math.round(stored / ((performance.now() - t0) / 1000));
        opts.log(`bench api: meanwhile the pipeline stored ${String(r['ingest_events_per_s'])} events/s`);
        measured = true;
        if (simulatorPid > 0) process.kill(simulatorPid, 'SIGTERM');
        return r;
      } finally {
        await service.close();
      }
    };
    const common = { nc, clickhouse: ch, port: 0, jwtSecret: 'b'.repeat(40), limits: { perAccountPerMinute: 1_000_000_000 }, log: opts.log };
    const api = await startApiServer(common);
    // The same api with the dashboard caches off: what one dashboard query costs.
    const uncached = await startApiServer({ ...common, metricsCacheMs: 0, alertsCacheMs: 0 });
    try {
      const login = await fetch(`${api.url}/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: 'viewer@acme', password: PASSWORD }),
      });
      const { access_token: token } = (await login.json()) as { access_token: string };
      const auth = { authorization: `Bearer ${token}` };
      const towers = await fetch(`${api.url}/towers`, { headers: auth });
      const etag = towers.headers.get('etag') ?? '';
      const raw = await startRawUws(new Uint8Array(await towers.arrayBuffer()), towers.headers.get('content-type') ?? 'application/json');
      const http = async (
        name: string,
        path: string,
        headers: Record<string, string>,
        connections = opts.connections,
        base = api.url,
        body?: unknown,
      ): Promise<Record<string, unknown>> => {
        opts.log(`bench api: ${name} (${connections} connections, ${opts.durationS} s)…`);
        const r = await runClient({
          kind: 'http',
          client: opts.client,
          url: `${base}${path}`,
          headers,
          connections,
          durationS: opts.durationS,
          ...(body === undefined ? {} : { method: 'POST', body: JSON.stringify(body) }),
        });
        opts.log(`bench api: ${name}: ${Math.round(Number(r['requests_per_s']))} req/s, p99 ${(r['latency_ms'] as { p99: number }).p99} ms`);
        return r;
      };
      // The reference first, then the api, with the same client, connections and duration.
      const rawGet = await http('raw uWS, the same bytes as GET /towers', '/towers', {}, opts.connections, raw.url);
      raw.close();
      const cachedGet = await http('GET /towers (200)', '/towers', auth);
      const rawRps = Number(rawGet['requests_per_s']);
      cachedGet['ratio_to_raw_uws'] = rawRps > 0 ? Math.round((Number(cachedGet['requests_per_s']) / rawRps) * 1000) / 1000 : null;
      opts.log(`bench api: cached GET is ${String(cachedGet['ratio_to_raw_uws'])} of raw uWS on this run`);
      // Decisions: one per request, and batches of 1,000 (the policies compile on the first).
      const asks = decisionAsks(world, MAX_DECISIONS_PER_REQUEST);
      const first = await fetch(`${api.url}/decisions`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify(asks[0]),
      });
      if (first.status !== 200) throw new Error(`bench api: POST /decisions answered ${first.status}: ${await first.text()}`);
      const decisionsOne = await http('POST /decisions, one request', '/decisions', auth, opts.connections, api.url, asks[0]);
      decisionsOne['decisions_per_s'] = Math.round(Number(decisionsOne['requests_per_s']));
      const decisionsBatch = await http(`POST /decisions, batches of ${asks.length}`, '/decisions', auth, 2, api.url, { requests: asks });
      decisionsBatch['decisions_per_s'] = Math.round(Number(decisionsBatch['requests_per_s']) * asks.length);
      opts.log(`bench api: decisions: ${String(decisionsOne['decisions_per_s'])}/s one by one, ${String(decisionsBatch['decisions_per_s'])}/s in batches`);
      const notModified = await http('GET /towers with If-None-Match (304)', '/towers', { ...auth, 'if-none-match': etag });
      const metrics1h = await http('GET /dashboard/metrics?range=1h, uncached', '/dashboard/metrics?range=1h', auth, 1, uncached.url);
      const metrics24h = await http('GET /dashboard/metrics?range=24h, uncached', '/dashboard/metrics?range=24h', auth, 1, uncached.url);
      const metrics7d = await http('GET /dashboard/metrics?range=7d, uncached', '/dashboard/metrics?range=7d', auth, 1, uncached.url);
      const metricsShared = await http('GET /dashboard/metrics?range=24h, 2 s cache', '/dashboard/metrics?range=24h', auth);
      const dashboardAlerts = await http('GET /dashboard/alerts, 1 s cache', '/dashboard/alerts', auth);
      const dashboardAlertsUncached = await http('GET /dashboard/alerts, uncached', '/dashboard/alerts', auth, 1, uncached.url);

      const policyPreview = await benchPreview(api.url, ch, world, opts.log);

      const alertsUnderIngest =
        (opts.ingestRate ?? 0) > 0
          ? await underIngest(opts.ingestRate ?? 0, () => http('GET /dashboard/alerts, 1 s cache, while ingest runs', '/dashboard/alerts', auth))
          : null;

      opts.log(`bench api: fan-out of ${opts.alerts} alerts to ${opts.sockets} sockets…`);
      const fanout = await runClient({ kind: 'ws', url: `${api.url.replace('http', 'ws')}/ws/alerts?token=${token}`, sockets: opts.sockets }, (send) => {
        void (async () => {
          const perFrame = 10;
          for (let i = 0; i < opts.alerts; i += perFrame) {
            const alerts = Array.from({ length: perFrame }, (_, k) =>
              briefAlert(`bench:${i + k}`, { lat: 40.7, lon: -74, rule_id: 'r1', policy_version: 'bench' }),
            );
            nc.publish(alertsSubject(BRIEF.acme), encodeAlerts(alerts));
            await new Promise((r) => setTimeout(r, (1000 * perFrame) / opts.alertRate));
          }
          await nc.flush();
          send(String(opts.alerts * opts.sockets));
        })();
      });
      opts.log(
        `bench api: fan-out: ${fanout['received']} of ${fanout['expected']} delivered, ${Math.round(Number(fanout['deliveries_per_s']))} messages/s, p99 ${(fanout['latency_ms'] as { p99: number }).p99} ms`,
      );
      const result = {
        machine: machine(),
        options: {
          client: opts.client,
          events: opts.events,
          duration_s: opts.durationS,
          connections: opts.connections,
          sockets: opts.sockets,
          alerts: opts.alerts,
          alert_rate: opts.alertRate,
          ingest_rate: opts.ingestRate ?? 0,
        },
        raw_uws_get: rawGet,
        cached_get: cachedGet,
        cached_get_304: notModified,
        decisions_one: decisionsOne,
        decisions_batch: decisionsBatch,
        dashboard_metrics_1h_uncached_1conn: metrics1h,
        dashboard_metrics_24h_uncached_1conn: metrics24h,
        dashboard_metrics_7d_uncached_1conn: metrics7d,
        dashboard_metrics_24h_cached: metricsShared,
        dashboard_alerts: dashboardAlerts,
        dashboard_alerts_uncached_1conn: dashboardAlertsUncached,
        dashboard_alerts_under_ingest: alertsUnderIngest,
        policy_preview: policyPreview,
        ws_fanout: fanout,
        rss_mb: Math.round(process.memoryUsage().rss / 2 ** 20),
      };
      const file = await writeResults('api', result);
      opts.log(`bench api: results written to ${file}`);
      return result;
    } finally {
      await uncached.close();
      await api.close();
    }
  } finally {
    await ch.close();
    await nc.drain().catch(() => nc.close());
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** `n` decision requests about acme's registered devices, apps and actions of the world, in turn. */
function decisionAsks(world: World, n: number): Array<{ device_id: string; app_id: string; action_id: string; tower_id: string }> {
  const devices = world.devices.filter((d) => d.enterprise_id === BRIEF.acme && d.user_id !== null);
  return Array.from({ length: n }, (_, i) => ({
    device_id: devices[i % devices.length]!.id,
    app_id: world.apps[(i * 7) % world.apps.length]!.id,
    action_id: world.actions[(i * 3) % world.actions.length]!.id,
    tower_id: world.towers[i % world.towers.length]!.id,
  }));
}

/**
 * A preview of acme's policies as they are over the whole filled week (`POST /policy-previews`,
 * polled to the end), beside the limit it cannot beat: streaming the same rows and columns out of
 * ClickHouse alone, in the same run.
 */
async function benchPreview(
  base: string,
  ch: Awaited<ReturnType<typeof openClickHouse>>,
  world: World,
  log: (l: string) => void,
): Promise<Record<string, unknown>> {
  const login = await fetch(`${base}/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'analyst@acme', password: PASSWORD }),
  });
  const { access_token: token } = (await login.json()) as { access_token: string };
  const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const { policies } = (await (await fetch(`${base}/policies`, { headers: auth })).json()) as { policies: unknown[] };
  log('bench api: policy preview over the week of acme events…');
  const t0 = performance.now();
  const started = (await (
    await fetch(`${base}/policy-previews`, { method: 'POST', headers: auth, body: JSON.stringify({ policies, range: '7d' }) })
  ).json()) as {
    preview_id: string;
  };
  let job: { status: string; from: string; to: string; result: Record<string, number> | null; error: string | null } = {
    status: 'running',
    from: '',
    to: '',
    result: null,
    error: null,
  };
  while (job.status === 'running') {
    await new Promise((r) => setTimeout(r, 200));
    job = (await (await fetch(`${base}/policy-previews/${started.preview_id}`, { headers: auth })).json()) as typeof job;
  }
  const wallMs = performance.now() - t0;
  if (job.result === null) throw new Error(`bench api: the preview ${job.status}: ${job.error ?? ''}`);
  const r = job.result;
  const out = {
    events_scanned: r['events_scanned'],
    not_replayable: r['not_replayable'],
    decision_classes: r['decision_classes'],
    duration_ms: r['duration_ms'],
    events_per_s: r['events_per_s'],
    wall_ms: Math.round(wallMs),
    ...(await rawClassScan(
      ch,
      worldPolicyInputs(world, BRIEF.acme),
      world.enterprises.find((e) => e.id === BRIEF.acme)?.timezone,
      BRIEF.acme,
      Date.parse(job.from),
      Date.parse(job.to),
    )),
    ratio_to_raw_scan: 0,
  };
  out.ratio_to_raw_scan = Math.round((Number(r['events_per_s']) / out.raw_scan_rows_per_s) * 1000) / 1000;
  log(
    `bench api: preview of ${String(out.events_scanned)} events (${String(out.decision_classes)} decision classes) in ${String(out.duration_ms)} ms (${String(out.events_per_s)} events/s); the engine's own class scan of the same window: ${out.raw_scan_rows_per_s} rows/s (ratio ${out.ratio_to_raw_scan})`,
  );
  return out;
}

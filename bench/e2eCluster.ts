/**
 * `towerwatch bench e2e --cluster N --pipelines P [--kill-leader]`: the end-to-end benchmark
 * scaled out on this machine. N nats-servers in a JetStream cluster (streams R3 from 3
 * servers), P `towerwatch pipeline` processes sharing the consumer, ClickHouse over HTTP in
 * cluster mode (TOWERWATCH_CLICKHOUSE_CLUSTER: rows through the Distributed `*_all` tables; the
 * stand-in of core/testing/clickhouseStandIn.ts in this process makes one real engine a
 * one-shard cluster behind ClickHouse's protocol), the simulator publishing through the cluster. `--kill-leader`
 * SIGKILLs the USAGE stream's leader a third of the way in. The same figures as `bench e2e`,
 * plus `publish_failures`, `publish_retries`, `nodes`, `pipelines`.
 *
 * All of it shares this machine's cores: the figures say what the layout costs and that it
 * holds under a failover, not what N machines would do.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { ControlPlaneStore } from '../core/controlPlane/index.js';
import { connectNats, ensureStreams, USAGE_STREAM } from '../core/nats/index.js';
import { processCpuSeconds, processRssBytes } from '../core/processes.js';
import { startClickHouseStandIn } from '../core/testing/clickhouseStandIn.js';
import { startNatsCluster } from '../core/testing/natsCluster.js';
import { PipelineProcess } from '../core/testing/pipelineProcess.js';
import { seedWorld } from '../fixtures/seed.js';
import { generateWorld } from '../fixtures/world.js';
import { round } from './benchReport.js';
import { alertLatencies, DEFAULT_WARMUP_SECONDS, type E2eOptions, type E2eResult, runSimulator, SEED, type SimulatorRun } from './e2e.js';

/** The stand-in's one-shard ClickHouse cluster. */
const CH_CLUSTER = 'tw';

export interface E2eClusterOptions extends E2eOptions {
  /** nats-servers in the cluster. */
  cluster: number;
  /** `towerwatch pipeline` processes. */
  pipelines: number;
  /** SIGKILL the USAGE stream's leader a third of the way through the publishing. */
  killLeader?: boolean;
}

export interface E2eClusterResult extends E2eResult {
  /** Events the simulator was asked for and did not get stored in the stream (it gave up). */
  publish_failures: number;
  /** Publishes the simulator retried (a leader election makes some). */
  publish_retries: number;
  nodes: number;
  pipelines: number;
  /** The server killed by `--kill-leader`, or null. */
  killed_leader: string | null;
}

/** A pipeline's counters from its /metrics (Prometheus text), summed over its series. */
async function scrape(p: PipelineProcess): Promise<Record<string, number>> {
  const url = /pipeline: health and metrics on (http:\/\/\S+) /.exec(p.output)?.[1];
  if (url === undefined || p.exit !== null) return {};
  const text = await (await fetch(`${url}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^(towerwatch_pipeline_\w+?)(?:\{[^}]*\})? ([\d.e+-]+)$/.exec(line);
    if (m) out[m[1]!] = (out[m[1]!] ?? 0) + Number(m[2]);
  }
  return out;
}

export async function benchE2eCluster(opts: E2eClusterOptions): Promise<E2eClusterResult> {
  if (!Number.isInteger(opts.cluster) || opts.cluster < 1 || opts.cluster > 7) throw new RangeError(`--cluster takes 1–7 servers, got ${String(opts.cluster)}`);
  if (!Number.isInteger(opts.pipelines) || opts.pipelines < 1 || opts.pipelines > 8)
    throw new RangeError(`--pipelines takes 1–8, got ${String(opts.pipelines)}`);
  if (opts.killLeader && opts.cluster < 3) throw new RangeError('--kill-leader needs --cluster 3 or more (R3 streams survive one server)');
  const log = opts.log ?? (() => undefined);
  const replicas = opts.cluster >= 3 ? 3 : 1;
  const dataDir = await mkdtemp(join(tmpdir(), 'towerwatch-e2e-cluster-'));
  const cluster = await startNatsCluster(opts.cluster);
  const standIn = await startClickHouseStandIn({ dataDir: join(dataDir, 'clickhouse'), cluster: CH_CLUSTER });
  const nc = await connectNats(cluster.url, 'towerwatch bench e2e --cluster', { maxReconnectAttempts: -1, reconnectTimeWait: 200 });
  const pipelines: PipelineProcess[] = [];
  const peak = { bench: 0, nats_server: 0, simulator: 0, pipelines: 0 };
  let simulatorPid: number | null = null;
  const pids = (): number[] => cluster.names.flatMap((_, i) => (cluster.member(i) ? [cluster.member(i)!.pid] : []));
  const sampler = setInterval(() => {
    peak.bench = Math.max(peak.bench, process.memoryUsage().rss);
    void Promise.all(pids().map(processRssBytes)).then(
      (r) =>
        (peak.nats_server = Math.max(
          peak.nats_server,
          r.reduce((a, b) => a + b, 0),
        )),
    );
    void Promise.all(pipelines.flatMap((p) => (p.exit === null && p.child.pid ? [processRssBytes(p.child.pid)] : []))).then(
      (r) =>
        (peak.pipelines = Math.max(
          peak.pipelines,
          r.reduce((a, b) => a + b, 0),
        )),
    );
    if (simulatorPid !== null) void processRssBytes(simulatorPid).then((r) => (peak.simulator = Math.max(peak.simulator, r)));
  }, 250);
  try {
    await ensureStreams(nc, { replicas });
    await seedWorld(await ControlPlaneStore.open(nc, { replicas }), generateWorld({ seed: SEED }));
    const jsm = await jetstreamManager(nc);
    let prefilled: SimulatorRun | null = null;
    if (opts.prefill) {
      prefilled = await runSimulator(cluster.url, opts, (pid) => (simulatorPid = pid));
      simulatorPid = null;
      log(`bench: prefilled the stream with ${prefilled.summary.events} events; starting ${opts.pipelines} pipelines`);
    }
    for (let i = 0; i < opts.pipelines; i++) {
      pipelines.push(
        new PipelineProcess(`pipeline ${i + 1}`, {
          natsUrl: cluster.url,
          dataDir: join(dataDir, `pipeline-${i + 1}`),
          clickhouseUrl: standIn.url,
          env: { TOWERWATCH_NATS_REPLICAS: String(replicas), TOWERWATCH_CLICKHOUSE_CLUSTER: CH_CLUSTER },
          args: opts.threads ? ['--threads', String(opts.threads)] : [],
        }),
      );
    }
    await Promise.all(pipelines.map((p) => p.ready(120_000)));
    const db = standIn.engine.database;
    const count = async (table: string): Promise<number> => {
      const rs = await standIn.engine.client.query({ query: `SELECT count() AS n FROM ${db}.${table}`, format: 'JSONEachRow' });
      return Number((await rs.json<{ n: unknown }>())[0]?.n ?? 0);
    };
    const alerts = alertLatencies(nc, (opts.warmupSeconds ?? DEFAULT_WARMUP_SECONDS) * 1000);
    const cpuBefore = process.cpuUsage();
    const cpuOf = async (list: number[]): Promise<number> => (await Promise.all(list.map(processCpuSeconds))).reduce((a, b) => a + b, 0);
    const natsCpuBefore = await cpuOf(pids());
    const pipelineCpuBefore = await cpuOf(pipelines.map((p) => p.child.pid ?? 0));

    // The leader dies once a third of the frames are in the stream.
    let killedLeader: string | null = null;
    const frames = Math.ceil(opts.events / opts.frameSize);
    let stopWatch = false;
    const leaderKill = opts.killLeader
      ? (async () => {
          while (!stopWatch) {
            const info = await jsm.streams.info(USAGE_STREAM).catch(() => null);
            if (info && info.state.messages >= frames / 3) {
              const leader = await cluster.streamLeader(nc, USAGE_STREAM);
              killedLeader = cluster.names[leader]!;
              log(`bench: SIGKILL of ${killedLeader}, the USAGE stream's leader, at ${info.state.messages} of ${frames} frames`);
              await cluster.kill(leader);
              return;
            }
            await new Promise((r) => setTimeout(r, 50));
          }
        })()
      : Promise.resolve();

    let started = 0;
    const firstRow = setInterval(() => {
      if (started === 0) void count('app_usage').then((n) => (started ||= n > 0 ? performance.now() : 0));
    }, 50);
    let sim: SimulatorRun | null = prefilled;
    let simError: unknown = null;
    if (sim === null) {
      sim = await runSimulator(cluster.url, opts, (pid) => (simulatorPid = pid)).catch((err: unknown) => {
        simError = err;
        return null;
      });
    }
    stopWatch = true;
    await leaderKill;
    const publishedEvents = sim?.summary.events ?? 0;
    if (simError !== null) log(`bench: the simulator failed: ${simError instanceof Error ? simError.message : String(simError)}`);
    log(`bench: published ${publishedEvents} events; waiting for ${opts.pipelines} pipelines`);
    const deadline = Date.now() + (opts.timeoutMs ?? 300_000);
    let stored = 0;
    while ((stored = await count('app_usage')) < publishedEvents && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    clearInterval(firstRow);
    const seconds = (performance.now() - (started || performance.now())) / 1000;
    await new Promise((r) => setTimeout(r, 200)); // the last alerts in flight
    alerts.stop();
    const cpu = process.cpuUsage(cpuBefore);
    const natsCpu = (await cpuOf(pids())) - natsCpuBefore;
    const pipelineCpu = (await cpuOf(pipelines.map((p) => p.child.pid ?? 0))) - pipelineCpuBefore;
    const noMetrics: Record<string, number> = {};
    const metrics = await Promise.all(pipelines.map((p) => scrape(p).catch(() => noMetrics)));
    const sum = (k: string): number => metrics.reduce((n, m) => n + (m[k] ?? 0), 0);
    const violations = await count('violations');
    const mb = (b: number): number => round(b / 2 ** 20, 1);
    const batches = sum('towerwatch_pipeline_batches_total');
    const expectedViolations = sim?.summary.expectedViolations ?? 0;
    return {
      events_published: publishedEvents,
      events_stored: stored,
      violations_expected: expectedViolations,
      violations_stored: violations,
      events_per_s: round(stored / Math.max(seconds, 1e-3)),
      latency_ms: alerts.percentiles(),
      warmup_latency_ms: alerts.warmupPercentiles(),
      // `bench` is this process (the ClickHouse stand-in and its engine) plus the pipelines.
      rss_mb: { bench: mb(peak.bench + peak.pipelines), nats_server: mb(peak.nats_server), simulator: mb(peak.simulator) },
      bench_memory_at_peak_mb: { js_heap_main: 0, array_buffers: 0, engine_tracked: 0, other: mb(peak.bench + peak.pipelines) },
      cpu_s: { bench: round((cpu.user + cpu.system) / 1e6 + pipelineCpu, 1), nats_server: round(natsCpu, 1), simulator: round(sim?.cpuSeconds ?? 0, 1) },
      cpu_us_per_event: round(((cpu.user + cpu.system) / 1e6 + pipelineCpu + natsCpu) * (1e6 / Math.max(1, stored)), 2),
      publish_events_per_s: round(sim?.summary.eventsPerSecond ?? 0),
      duration_s: round(seconds, 1),
      mode: opts.prefill ? 'prefill' : 'concurrent',
      ok: simError === null && stored === publishedEvents && violations === expectedViolations,
      // Of the pipelines alive at the end (a killed one's counters went with it).
      pipeline: {
        batches,
        events_per_batch: round(sum('towerwatch_pipeline_events_total') / Math.max(1, batches)),
        insert_ms_per_batch: round((sum('towerwatch_pipeline_insert_seconds_total') * 1000) / Math.max(1, batches), 1),
        lookup_ms_per_batch: round((sum('towerwatch_pipeline_stored_lookup_seconds_total') * 1000) / Math.max(1, batches), 1),
      },
      publish_failures: opts.events - publishedEvents,
      publish_retries: sim?.summary.retries ?? 0,
      nodes: opts.cluster,
      pipelines: opts.pipelines,
      killed_leader: killedLeader,
    };
  } finally {
    clearInterval(sampler);
    await Promise.allSettled(pipelines.map((p) => p.kill('SIGTERM', 30_000).catch(() => p.kill('SIGKILL'))));
    await nc.drain().catch(() => nc.close());
    await standIn.close();
    await cluster.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

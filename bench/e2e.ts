/**
 * End-to-end benchmark: a nats-server and the pipeline (in this process, owning an embedded
 * ClickHouse as `up` does), fed by the simulator in a child process. Publishes N events,
 * waits until every one is stored, checks the counts in ClickHouse, and reports sustained
 * events/s, publish→alert latency percentiles, peak RSS and CPU of each process.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NatsConnection } from '@nats-io/transport-node';
import { ControlPlaneStore } from '../core/controlPlane/index.js';
import { ALL_ALERTS_SUBJECT, decodeAlerts } from '../core/live.js';
import { connectNats, startNatsServer } from '../core/nats/index.js';
import { processCpuSeconds, processRssBytes } from '../core/processes.js';
import { seedWorld } from '../fixtures/seed.js';
import { generateWorld } from '../fixtures/world.js';
import { startPipelineService } from '../pipeline/service.js';
import { readNewestResult, round, writeResults } from './benchReport.js';
import { benchE2eCluster, type E2eClusterResult } from './e2eCluster.js';

export interface E2eOptions {
  events: number;
  /** Events/s; 0 = as fast as the simulator can. */
  rate: number;
  frameSize: number;
  threads?: number | undefined;
  /**
   * Publish everything before the pipeline starts, then time the pipeline draining the stream
   * alone: its own capacity, without the simulator competing for the cores. Latencies then
   * measure time spent queued, not the pipeline.
   */
  prefill?: boolean;
  /** Give up waiting for the pipeline after this long. */
  timeoutMs?: number;
  /**
   * Alerts that arrive within this long of the first one are reported apart
   * (`warmup_latency_ms`): the start (code not yet optimized, the first inserts) is not the
   * steady state the percentiles describe. @default DEFAULT_WARMUP_SECONDS
   */
  warmupSeconds?: number | undefined;
  log?: (line: string) => void;
}

export interface E2eResult {
  events_published: number;
  events_stored: number;
  violations_expected: number;
  violations_stored: number;
  events_per_s: number;
  /** Publish→alert latency after the warm-up. */
  latency_ms: Percentiles;
  /** The same during the warm-up (null when there was none, or no alert in it). */
  warmup_latency_ms: Percentiles | null;
  rss_mb: { bench: number; nats_server: number; simulator: number };
  /**
   * The bench process's memory when its RSS peaked: the main thread's JS heap, ArrayBuffers
   * (frames, row bodies), what the ClickHouse engine counts as its own (MemoryTracking), and
   * the rest (worker threads' heaps, code, allocator slack).
   */
  bench_memory_at_peak_mb: { js_heap_main: number; array_buffers: number; engine_tracked: number; other: number };
  cpu_s: { bench: number; nats_server: number; simulator: number };
  /** CPU of the pipeline (this process) and nats-server per stored event, while it ran. */
  cpu_us_per_event: number;
  publish_events_per_s: number;
  duration_s: number;
  ok: boolean;
  pipeline: { batches: number; events_per_batch: number; insert_ms_per_batch: number; lookup_ms_per_batch: number };
  mode: 'concurrent' | 'prefill';
}

const CLI = fileURLToPath(new URL('../bin/towerwatch.js', import.meta.url));
/** The simulator's world: the bench seeds it, the simulator is told it. */
export const SEED = 42;

export interface Percentiles {
  p50: number;
  p95: number;
  p99: number;
}

/** Seconds from the first alert whose latencies are reported apart, as the start. */
export const DEFAULT_WARMUP_SECONDS = 1;

export async function benchE2e(opts: E2eOptions): Promise<E2eResult> {
  const log = opts.log ?? (() => undefined);
  const dataDir = await mkdtemp(join(tmpdir(), 'towerwatch-e2e-'));
  const server = await startNatsServer({ storeDir: join(dataDir, 'nats') });
  const nc = await connectNats(server.url, 'towerwatch bench e2e');
  const peak = { bench: 0, nats_server: 0, simulator: 0 };
  /** What made up this process's memory when its RSS peaked (the engine's own count sampled each second). */
  let engineBytes = 0;
  let atPeak = { js_heap_main: 0, array_buffers: 0, engine_tracked: 0 };
  let simulatorPid: number | null = null;
  const sampler = setInterval(() => {
    const m = process.memoryUsage();
    if (m.rss > peak.bench) {
      peak.bench = m.rss;
      atPeak = { js_heap_main: m.heapTotal, array_buffers: m.arrayBuffers, engine_tracked: engineBytes };
    }
    void processRssBytes(server.pid).then((r) => (peak.nats_server = Math.max(peak.nats_server, r)));
    if (simulatorPid !== null) void processRssBytes(simulatorPid).then((r) => (peak.simulator = Math.max(peak.simulator, r)));
  }, 250);
  try {
    const world = generateWorld({ seed: SEED });
    await seedWorld(await ControlPlaneStore.open(nc), world);
    let prefilled: SimulatorRun | null = null;
    if (opts.prefill) {
      prefilled = await runSimulator(server.url, opts, (pid) => (simulatorPid = pid));
      simulatorPid = null;
      log(`bench: prefilled the stream with ${prefilled.summary.events} events; starting the pipeline`);
    }
    const service = await startPipelineService({
      config: { clickhouseUrl: null, dataDir, retentionDays: 30 },
      nc,
      natsUrl: server.url,
      log,
      statusEverySeconds: 0,
      pipeline: opts.threads ? { threads: opts.threads } : {},
      // The pipeline alone: no towers answer here, and commands are not what this measures.
      remediator: false,
    });
    const engineSampler = setInterval(() => {
      service.clickhouse.client
        .query({ query: "SELECT value AS n FROM system.metrics WHERE metric = 'MemoryTracking'", format: 'JSONEachRow' })
        .then((rs) => rs.json<{ n: unknown }>())
        .then((r) => (engineBytes = Number(r[0]?.n ?? 0)))
        .catch(() => undefined);
    }, 1000);
    try {
      await service.pipeline.ready();
      const alerts = alertLatencies(nc, (opts.warmupSeconds ?? DEFAULT_WARMUP_SECONDS) * 1000);
      const cpuBefore = process.cpuUsage();
      const natsCpuBefore = await processCpuSeconds(server.pid);
      // The clock starts at the first event the pipeline takes (the simulator first compiles
      // every enterprise's policies, which is not the pipeline's time).
      let started = 0;
      const firstEvent = setInterval(() => {
        if (started === 0 && service.pipeline.counters.fetched > 0) started = performance.now();
      }, 5);
      const sim = prefilled ?? (await runSimulator(server.url, opts, (pid) => (simulatorPid = pid)));
      log(`bench: published ${sim.summary.events} events in ${(sim.summary.elapsedMs / 1000).toFixed(1)} s; waiting for the pipeline`);
      const deadline = Date.now() + (opts.timeoutMs ?? 300_000);
      while (service.pipeline.counters.events < sim.summary.events && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      clearInterval(firstEvent);
      const seconds = (performance.now() - (started || performance.now())) / 1000;
      await new Promise((r) => setTimeout(r, 200)); // the last alerts in flight
      alerts.stop();
      const cpu = process.cpuUsage(cpuBefore);
      const natsCpu = (await processCpuSeconds(server.pid)) - natsCpuBefore;
      const q = async (sql: string): Promise<number> => {
        const rs = await service.clickhouse.client.query({ query: sql, format: 'JSONEachRow' });
        return Number((await rs.json<{ n: unknown }>())[0]?.n ?? 0);
      };
      const stored = await q('SELECT count() AS n FROM app_usage');
      const violations = await q('SELECT count() AS n FROM violations');
      const mb = (b: number): number => round(b / 2 ** 20, 1);
      return {
        events_published: sim.summary.events,
        events_stored: stored,
        violations_expected: sim.summary.expectedViolations ?? 0,
        violations_stored: violations,
        events_per_s: round(stored / seconds),
        latency_ms: alerts.percentiles(),
        warmup_latency_ms: alerts.warmupPercentiles(),
        rss_mb: { bench: mb(peak.bench), nats_server: mb(peak.nats_server), simulator: mb(peak.simulator) },
        bench_memory_at_peak_mb: {
          js_heap_main: mb(atPeak.js_heap_main),
          array_buffers: mb(atPeak.array_buffers),
          engine_tracked: mb(atPeak.engine_tracked),
          other: mb(peak.bench - atPeak.js_heap_main - atPeak.array_buffers - atPeak.engine_tracked),
        },
        cpu_s: { bench: round((cpu.user + cpu.system) / 1e6, 1), nats_server: round(natsCpu, 1), simulator: round(sim.cpuSeconds, 1) },
        cpu_us_per_event: round(((cpu.user + cpu.system) / 1e6 + natsCpu) * (1e6 / Math.max(1, stored)), 2),
        publish_events_per_s: round(sim.summary.eventsPerSecond),
        duration_s: round(seconds, 1),
        mode: opts.prefill ? 'prefill' : 'concurrent',
        ok: stored === sim.summary.events && violations === (sim.summary.expectedViolations ?? 0),
        pipeline: {
          batches: service.pipeline.counters.batches,
          events_per_batch: round(service.pipeline.counters.events / Math.max(1, service.pipeline.counters.batches)),
          insert_ms_per_batch: round(service.pipeline.counters.insertMs / Math.max(1, service.pipeline.counters.batches), 1),
          lookup_ms_per_batch: round(service.pipeline.counters.lookupMs / Math.max(1, service.pipeline.counters.batches), 1),
        },
      };
    } finally {
      clearInterval(engineSampler);
      await service.close();
    }
  } finally {
    clearInterval(sampler);
    await nc.drain().catch(() => nc.close());
    await server.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/**
 * Publish→alert latency of every alert the pipelines publish, from the event's time to its
 * arrival here; those arriving within `warmupMs` of the first alert are kept apart.
 */
export function alertLatencies(nc: NatsConnection, warmupMs = 0): { stop(): void; percentiles(): Percentiles; warmupPercentiles(): Percentiles | null } {
  const latencies: number[] = [];
  const warmup: number[] = [];
  let first = 0;
  const sub = nc.subscribe(ALL_ALERTS_SUBJECT, {
    callback: (_err, msg) => {
      const now = Date.now();
      const decoded = decodeAlerts(msg.data);
      if (!decoded.ok) return;
      if (first === 0) first = now;
      const into = now - first < warmupMs ? warmup : latencies;
      for (const a of decoded.value) into.push(now - a.ts);
    },
  });
  return {
    stop: () => sub.unsubscribe(),
    percentiles: () => percentilesOf(latencies),
    warmupPercentiles: () => (warmup.length === 0 ? null : percentilesOf(warmup)),
  };
}

function percentilesOf(values: readonly number[]): Percentiles {
  const sorted = [...values].sort((a, b) => a - b);
  const pct = (p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
  return { p50: pct(50), p95: pct(95), p99: pct(99) };
}

export interface SimulatorRun {
  summary: { events: number; expectedViolations: number | null; elapsedMs: number; eventsPerSecond: number; retries?: number };
  cpuSeconds: number;
}

/** The simulator as a child process (the world of seed 42, seeded already), until it has published `opts.events`. */
export function runSimulator(natsUrl: string, opts: Pick<E2eOptions, 'events' | 'rate' | 'frameSize'>, onPid: (pid: number) => void): Promise<SimulatorRun> {
  const args = [
    CLI,
    'simulate',
    'run',
    '--skip-seed',
    '--json',
    '--seed',
    String(SEED),
    '--events',
    String(opts.events),
    '--rate',
    String(opts.rate),
    '--frame-size',
    String(opts.frameSize),
    '--discovery',
    '0',
    // Events stamped as they are published: the latency is publish → alert, not the towers'
    // simulated reporting delay (up to 500 ms) on top.
    '--report-delay-ms',
    '0',
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env: { ...process.env, NATS_URL: natsUrl }, stdio: ['ignore', 'pipe', 'pipe'] });
    if (child.pid !== undefined) onPid(child.pid);
    let out = '';
    let err = '';
    let cpu = 0;
    const poll = setInterval(() => {
      if (child.pid !== undefined) void processCpuSeconds(child.pid).then((c) => (cpu = Math.max(cpu, c)));
    }, 250);
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => {
      clearInterval(poll);
      if (code !== 0) return reject(new Error(`simulator exited with ${code}: ${err.slice(-2000)}`));
      try {
        resolve({ summary: JSON.parse(out.trim().split('\n').pop() ?? '') as SimulatorRun['summary'], cpuSeconds: cpu });
      } catch (e) {
        reject(new Error(`simulator printed no summary: ${out.slice(-500)} ${err.slice(-500)}`, { cause: e }));
      }
    });
  });
}

/** The machine's limit from `bench limits` (bench/limits.ts), and where it came from. */
export interface E2eLimit {
  limit_events_per_s: number | null;
  ratio_to_limit: number | null;
  /** The same run's CPU ceiling (the cores divided among the stages' measured CPU per event). */
  cpu_ceiling_events_per_s: number | null;
  ratio_to_cpu_ceiling: number | null;
  limit_source: string | null;
}

/** `--limit` when given, else the newest `bench limits` result; null when there is neither. */
async function resolveLimit(given: number | undefined, eventsPerS: number): Promise<E2eLimit> {
  let limit: number | null = given ?? null;
  let ceiling: number | null = null;
  let source: string | null = given === undefined ? null : '--limit';
  if (limit === null) {
    const newest = await readNewestResult('limits');
    const value = newest?.result['limit_events_per_s'];
    const cpu = newest?.result['cpu_ceiling_events_per_s'];
    if (newest && typeof value === 'number' && value > 0) {
      limit = value;
      source = newest.file;
      if (typeof cpu === 'number' && cpu > 0) ceiling = cpu;
    }
  }
  const ratio = (to: number | null): number | null => (to === null ? null : round(eventsPerS / to, 3));
  return {
    limit_events_per_s: limit,
    ratio_to_limit: ratio(limit),
    cpu_ceiling_events_per_s: ceiling,
    ratio_to_cpu_ceiling: ratio(ceiling),
    limit_source: source,
  };
}

export interface E2eCliOptions extends E2eOptions {
  json: boolean;
  limit?: number | undefined;
  /** Scaled out (bench/e2eCluster.ts): nats-servers, pipeline processes, the USAGE leader killed. */
  cluster?: { nodes: number; pipelines: number; killLeader: boolean } | undefined;
}

export async function runE2eCli(opts: E2eCliOptions): Promise<E2eResult> {
  const warmupSeconds = opts.warmupSeconds ?? DEFAULT_WARMUP_SECONDS;
  const result: E2eResult & Partial<E2eClusterResult> = opts.cluster
    ? await benchE2eCluster({ ...opts, cluster: opts.cluster.nodes, pipelines: opts.cluster.pipelines, killLeader: opts.cluster.killLeader })
    : await benchE2e(opts);
  const limit = await resolveLimit(opts.limit, result.events_per_s);
  const file = await writeResults(opts.cluster ? 'e2e-cluster' : 'e2e', {
    options: {
      events: opts.events,
      rate: opts.rate,
      frame_size: opts.frameSize,
      prefill: opts.prefill ?? false,
      warmup_s: warmupSeconds,
      ...(opts.cluster ? { cluster: opts.cluster.nodes, pipelines: opts.cluster.pipelines, kill_leader: opts.cluster.killLeader } : {}),
    },
    ...result,
    ...limit,
  });
  const clusterFields = opts.cluster
    ? {
        publish_failures: result.publish_failures,
        publish_retries: result.publish_retries,
        nodes: result.nodes,
        pipelines: result.pipelines,
        killed_leader: result.killed_leader,
      }
    : {};
  if (opts.json) {
    const { events_published, events_stored, violations_expected, violations_stored, events_per_s, latency_ms, warmup_latency_ms, rss_mb, cpu_us_per_event } =
      result;
    const { limit_events_per_s, ratio_to_limit, cpu_ceiling_events_per_s, ratio_to_cpu_ceiling } = limit;
    process.stdout.write(
      `${JSON.stringify({
        events_published,
        events_stored,
        violations_expected,
        violations_stored,
        events_per_s,
        limit_events_per_s,
        ratio_to_limit,
        cpu_ceiling_events_per_s,
        ratio_to_cpu_ceiling,
        cpu_us_per_event,
        latency_ms,
        warmup_latency_ms,
        rss_mb: round(rss_mb.bench + rss_mb.nats_server, 1),
        ...clusterFields,
      })}\n`,
    );
  } else {
    console.table({
      'events published': result.events_published,
      'events stored': result.events_stored,
      'violations expected / stored': `${result.violations_expected} / ${result.violations_stored}`,
      [result.mode === 'prefill' ? 'pipeline drain events/s (stream prefilled)' : 'sustained events/s (publish → stored)']: result.events_per_s,
      'simulator publish events/s': result.publish_events_per_s,
      'limit events/s (bench limits) / ratio to it': `${limit.limit_events_per_s ?? 'none measured'} / ${limit.ratio_to_limit ?? '-'}`,
      'CPU ceiling events/s (bench limits) / ratio to it': `${limit.cpu_ceiling_events_per_s ?? 'none measured'} / ${limit.ratio_to_cpu_ceiling ?? '-'}`,
      'CPU µs per event (pipeline + nats-server)': result.cpu_us_per_event,
      [`publish→alert latency p50 / p95 / p99 ms (after the first ${warmupSeconds} s)`]: `${result.latency_ms.p50} / ${result.latency_ms.p95} / ${result.latency_ms.p99}`,
      'the same in the first seconds (warm-up)': result.warmup_latency_ms
        ? `${result.warmup_latency_ms.p50} / ${result.warmup_latency_ms.p95} / ${result.warmup_latency_ms.p99}`
        : '-',
      'peak RSS MB (bench+pipeline / nats-server / simulator)': `${result.rss_mb.bench} / ${result.rss_mb.nats_server} / ${result.rss_mb.simulator}`,
      'CPU s (bench+pipeline / nats-server / simulator)': `${result.cpu_s.bench} / ${result.cpu_s.nats_server} / ${result.cpu_s.simulator}`,
      ...(opts.cluster
        ? {
            'nats-servers / pipelines': `${opts.cluster.nodes} / ${opts.cluster.pipelines}`,
            'publish failures / retries': `${result.publish_failures ?? 0} / ${result.publish_retries ?? 0}`,
            'USAGE leader killed': result.killed_leader ?? 'no',
          }
        : {}),
    });
  }
  process.stderr.write(`bench: ${result.ok ? 'counts match' : 'COUNTS DO NOT MATCH'}; results written to ${file}\n`);
  return result;
}

/**
 * `towerwatch bench limits`: what each stage of the pipeline can do alone on this machine, with
 * the data `bench e2e` uses (the simulator's world, seed and frames):
 *
 * 1. JetStream: publish of the frames into USAGE (pipelined, with msg ids, as the simulator
 *    does), then a pull consumer taking and acking them (as the pipeline does);
 * 2. decode + enrich + WASM evaluation of the frames (`processBatch`, one thread);
 * 3. row encoding of its output (APP_USAGE / VIOLATIONS `encodeNative`, one thread), as a worker does;
 * 4. the insert of those rows into the real schema on embedded chdb as the sink writes them
 *    (violations, then app_usage; Native blocks), then, for comparison, in every format
 *    insertBench.ts tries.
 *
 * Stages 2 and 3 are CPU-bound in worker threads: their events/s are per core, and the
 * machine's figure is that times the cores. The slowest stage's machine figure is the limit
 * an end-to-end run (`bench e2e`) is measured against. Each stage's CPU per event (all threads)
 * is measured too; summed over the pipeline's stages it gives the CPU ceiling, what the cores
 * could do if they did nothing else: the stages share the cores in a real run, so on a small
 * machine the ceiling, not the slowest stage, is the figure to compare with. Figures are
 * reported, never asserted.
 */
import { jetstream, jetstreamManager, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { APP_USAGE, type AppUsageRow, migrate, openClickHouse, VIOLATIONS } from '../core/clickhouse/index.js';
import { ControlPlaneStore, ControlPlaneView } from '../core/controlPlane/index.js';
import { processCpuSeconds } from '../core/processes.js';
import { connectNats, ensureConsumer, ensureStreams, publishWithRetry, startNatsServer, USAGE_STREAM, usageSubject } from '../core/nats/index.js';
import { encodeUsageFrame, usageMsgId } from '../core/wire.js';
import { Random } from '../fixtures/random.js';
import { seedWorld } from '../fixtures/seed.js';
import { createTrafficGenerator } from '../fixtures/traffic.js';
import { generateWorld, type World } from '../fixtures/world.js';
import { createWorldClassifier } from '../fixtures/worldPolicies.js';
import { processBatch, type BatchContext, type BatchMessage, type BatchOutput } from '../pipeline/batchProcessor.js';
import { controlPlaneDirectory, PolicyRegistry } from '../rules-wasm/index.js';
import { DEFAULT_BATCH_MESSAGES } from '../pipeline/pipeline.js';
import { round, writeResults } from './benchReport.js';
import { benchReportTable } from './benchTable.js';
import { FORMATS, insertOnce, type InsertBenchFormat } from './insertBench.js';

export const DEFAULT_LIMITS_EVENTS = 300_000;
export const DEFAULT_LIMITS_FRAME_SIZE = 1000;
/** How long each CPU-bound stage repeats its passes over the frames (after one warm-up pass). */
export const DEFAULT_LIMITS_CPU_MS = 2000;
/** The seed `bench e2e` runs the simulator with: the same world, the same policies. */
const SEED = 42;
/** Publishes awaiting their ack at once: the simulator's default (fixtures/publisher.ts). */
const PUBLISH_IN_FLIGHT = 64;
const CONSUMER = 'limits';
/** Insert time after which a format is tried no further. */
const INSERT_BUDGET_MS = 4000;

export interface LimitsOptions {
  /** Events in the frames every stage handles. @default DEFAULT_LIMITS_EVENTS */
  events?: number;
  /** Events per frame. @default DEFAULT_LIMITS_FRAME_SIZE */
  frameSize?: number;
  /** Measuring time of each CPU-bound stage. @default DEFAULT_LIMITS_CPU_MS */
  cpuMs?: number;
  log?: (line: string) => void;
}

export type LimitsStageName = 'jetstream_publish' | 'jetstream_consume' | 'decode_enrich_evaluate' | 'row_encoding' | 'clickhouse_insert';

export interface LimitsStage {
  stage: LimitsStageName;
  /** What the machine can do in this stage: per core × cores where it is CPU-bound. */
  events_per_s: number;
  /** One thread's figure, for the CPU-bound stages (null where the stage is not a thread's work). */
  per_core_events_per_s: number | null;
  frames_per_s: number;
  /** Measured time: summed over passes for the CPU-bound stages; for the insert, the sink path's pass over every batch (violations and app_usage). */
  seconds: number;
  /**
   * CPU it spends per event, every thread of this process (the engine's and the garbage
   * collector's included) plus nats-server's for the JetStream stages; for the insert, the
   * sink path's (merges running meanwhile included).
   */
  cpu_us_per_event: number;
}

export interface LimitsInsert {
  format: InsertBenchFormat;
  rows_per_insert: number;
  inserts: number;
  /** app_usage rows / insert time (JSON formats encode inside the insert, so they include it). */
  rows_per_s: number;
}

export interface LimitsResult {
  events: number;
  frames: number;
  frame_size: number;
  violations: number;
  cores: number;
  stages: LimitsStage[];
  /** app_usage inserts per format (the clickhouse_insert stage takes the best, plus violations). */
  inserts: LimitsInsert[];
  violations_insert_rows_per_s: number;
  limit_stage: LimitsStageName;
  limit_events_per_s: number;
  /** CPU per event of the pipeline's own stages together (consume, decode+enrich+evaluate, encoding, insert). */
  pipeline_cpu_us_per_event: number;
  /**
   * What the cores could do if they did nothing but the pipeline's stages, each at its measured
   * CPU cost: cores × 1e6 / pipeline_cpu_us_per_event. A run that shares the cores (stages
   * side by side, the simulator) cannot pass it.
   */
  cpu_ceiling_events_per_s: number;
  duration_s: number;
}

interface Frame {
  subject: string;
  data: Uint8Array;
  msgId: string;
  events: number;
}

export async function benchLimits(options: LimitsOptions = {}): Promise<LimitsResult> {
  const events = options.events ?? DEFAULT_LIMITS_EVENTS;
  const frameSize = options.frameSize ?? DEFAULT_LIMITS_FRAME_SIZE;
  const cpuMs = options.cpuMs ?? DEFAULT_LIMITS_CPU_MS;
  const log = options.log ?? (() => undefined);
  const cores = availableParallelism();
  const started = performance.now();
  const dataDir = await mkdtemp(join(tmpdir(), 'towerwatch-limits-'));
  try {
    await using server = await startNatsServer({ storeDir: join(dataDir, 'nats') });
    const nc = await connectNats(server.url, 'towerwatch bench limits');
    try {
      await ensureStreams(nc);
      const world = generateWorld({ seed: SEED });
      const store = await ControlPlaneStore.open(nc);
      await seedWorld(store, world);
      await store.close();
      const cacheDir = join(dataDir, 'policies');
      const frames = await generateFrames(world, events, frameSize, cacheDir);
      log(`limits: ${frames.length} frames of ${frameSize} events; JetStream publish`);

      const js = jetstream(nc);
      const publish = await withCpu(server.pid, () => timePublish(js, frames));
      const consume = await withCpu(server.pid, () => timeConsume(nc, js, frames.length));
      log('limits: decode + enrich + evaluate');

      const view = await ControlPlaneView.open(nc);
      const registry = await PolicyRegistry.open(view, { cacheDir });
      const directory = controlPlaneDirectory(view);
      try {
        const ctx: BatchContext = { directory, view, module: (id) => registry.module(id) };
        const batches = chunk(
          frames.map((f, i): BatchMessage => ({ seq: publish.seqs[i] ?? i + 1, subject: f.subject, data: f.data })),
          DEFAULT_BATCH_MESSAGES,
        );
        let outputs: BatchOutput[] = [];
        const evaluate = timePasses(cpuMs, () => (outputs = batches.map((b) => processBatch(b, ctx))));
        const stored = outputs.reduce((n, o) => n + o.appUsage.length, 0);
        if (stored !== events) throw new Error(`processBatch made ${stored} app_usage rows of ${events} events`);
        log('limits: row encoding');
        let bodies: Array<{ appUsage: Buffer; violations: Buffer; violationRows: number }> = [];
        // One writer per table, reused batch after batch, as a worker thread keeps them.
        const usageWriter = APP_USAGE.nativeWriter(DEFAULT_BATCH_MESSAGES * frameSize);
        const violationWriter = VIOLATIONS.nativeWriter();
        const encode = timePasses(cpuMs, () => {
          bodies = outputs.map((o) => ({
            appUsage: APP_USAGE.encodeNative(o.appUsage, usageWriter),
            violations: VIOLATIONS.encodeNative(o.violations, violationWriter),
            violationRows: o.violations.length,
          }));
        });
        log('limits: ClickHouse inserts');
        const insert = await timeInserts(dataDir, outputs, bodies);
        const violations = outputs.reduce((n, o) => n + o.violations.length, 0);

        const stage = (name: LimitsStageName, seconds: number, cpuSeconds: number, perCore: boolean, passes = 1): LimitsStage => {
          const single = (events * passes) / seconds;
          return {
            stage: name,
            events_per_s: round(perCore ? single * cores : single),
            per_core_events_per_s: perCore ? round(single) : null,
            frames_per_s: round(((perCore ? cores : 1) * frames.length * passes) / seconds),
            seconds: round(seconds, 4),
            cpu_us_per_event: round((cpuSeconds * 1e6) / (events * passes), 2),
          };
        };
        const stages = [
          stage('jetstream_publish', publish.seconds, publish.cpuSeconds, false),
          stage('jetstream_consume', consume.seconds, consume.cpuSeconds, false),
          stage('decode_enrich_evaluate', evaluate.seconds, evaluate.cpuSeconds, true, evaluate.passes),
          stage('row_encoding', encode.seconds, encode.cpuSeconds, true, encode.passes),
          stage('clickhouse_insert', insert.seconds, insert.cpuSeconds, false),
        ];
        const slowest = stages.reduce((a, b) => (b.events_per_s < a.events_per_s ? b : a));
        // The publisher is the towers' work, not the pipeline's.
        const pipelineCpu = stages.filter((s) => s.stage !== 'jetstream_publish').reduce((n, s) => n + s.cpu_us_per_event, 0);
        return {
          events,
          frames: frames.length,
          frame_size: frameSize,
          violations,
          cores,
          stages,
          inserts: insert.formats,
          violations_insert_rows_per_s: insert.violationRowsPerS,
          limit_stage: slowest.stage,
          limit_events_per_s: slowest.events_per_s,
          pipeline_cpu_us_per_event: round(pipelineCpu, 2),
          cpu_ceiling_events_per_s: round((cores * 1e6) / pipelineCpu),
          duration_s: round((performance.now() - started) / 1000, 1),
        };
      } finally {
        directory.dispose();
        registry.close();
        await view.close();
      }
    } finally {
      await nc.drain().catch(() => nc.close());
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** The simulator's frames (fixtures/publisher.ts): random routes, violations steered by the real policies. */
async function generateFrames(world: World, events: number, frameSize: number, cacheDir: string): Promise<Frame[]> {
  const classifier = await createWorldClassifier(world, { cacheDir });
  const generator = createTrafficGenerator(world, { seed: SEED, classify: classifier.classify, now: () => Date.now() });
  const random = new Random(SEED);
  const routes = world.towers.flatMap((t) => t.carrier_ids.map((carrier) => ({ carrier, tower: t.id })));
  const frames: Frame[] = [];
  for (let n = 0; n < events;) {
    const route = random.pick(routes);
    const batch = generator.nextFrame(route.carrier, route.tower, Math.min(frameSize, events - n));
    frames.push({
      subject: usageSubject(route.carrier, route.tower),
      data: encodeUsageFrame(route.carrier, route.tower, batch),
      msgId: usageMsgId(route.carrier, route.tower, batch),
      events: batch.length,
    });
    n += batch.length;
  }
  return frames;
}

async function timePublish(js: JetStreamClient, frames: readonly Frame[]): Promise<{ seconds: number; seqs: number[] }> {
  const seqs: number[] = new Array<number>(frames.length);
  const inFlight = new Set<Promise<void>>();
  // Set by publishes in flight; thrown by the loop (a rejection nobody awaits would end the process).
  let failure = null as Error | null;
  const t0 = performance.now();
  for (let i = 0; i < frames.length && failure === null; i++) {
    while (inFlight.size >= PUBLISH_IN_FLIGHT) await Promise.race(inFlight);
    const f = frames[i] as Frame;
    const p: Promise<void> = publishWithRetry(js, f.subject, f.data, { msgID: f.msgId })
      .then((ack) => {
        // A frame the stream took for a duplicate would never reach the consumer.
        if (ack.duplicate) throw new Error(`frame ${i} (${f.msgId}) was stored as a duplicate`);
        seqs[i] = ack.seq;
      })
      .catch((err: unknown) => void (failure ??= err instanceof Error ? err : new Error(String(err))))
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  }
  await Promise.all(inFlight);
  if (failure) throw failure;
  return { seconds: (performance.now() - t0) / 1000, seqs };
}

/** The pipeline's consumer (durable, explicit acks, continuous pull) taking every frame and acking it. */
async function timeConsume(nc: NatsConnection, js: JetStreamClient, frames: number): Promise<{ seconds: number }> {
  await ensureConsumer(nc, USAGE_STREAM, CONSUMER, { ackWaitMs: 60_000, maxAckPending: 4096 });
  const consumer = await js.consumers.get(USAGE_STREAM, CONSUMER);
  const t0 = performance.now();
  const messages = await consumer.consume({ max_messages: DEFAULT_BATCH_MESSAGES * 2, expires: 30_000 });
  let taken = 0;
  for await (const m of messages) {
    if (++taken < frames) {
      m.ack();
      continue;
    }
    // Acks go in order on one connection: the server has them all once it confirms the last.
    await m.ackAck();
    break;
  }
  const seconds = (performance.now() - t0) / 1000;
  await messages.close();
  const info = await (await jetstreamManager(nc)).consumers.info(USAGE_STREAM, CONSUMER);
  if (info.num_ack_pending !== 0 || info.num_pending !== 0) {
    throw new Error(`consumer not drained: ${info.num_pending} pending, ${info.num_ack_pending} unacked`);
  }
  return { seconds };
}

/** One warm-up pass, then passes until `ms` have been spent; the last pass's result stays. */
function timePasses(ms: number, pass: () => unknown): { seconds: number; passes: number; cpuSeconds: number } {
  pass();
  let passes = 0;
  const cpu = process.cpuUsage();
  const t0 = performance.now();
  do {
    pass();
    passes++;
  } while (performance.now() - t0 < ms);
  return { seconds: (performance.now() - t0) / 1000, passes, cpuSeconds: cpuSecondsSince(cpu) };
}

function cpuSecondsSince(before: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(before);
  return (d.user + d.system) / 1e6;
}

/** `run`'s result with the CPU seconds this process and `serverPid` spent meanwhile. */
async function withCpu<T extends object>(serverPid: number, run: () => Promise<T>): Promise<T & { cpuSeconds: number }> {
  const server = await processCpuSeconds(serverPid);
  const cpu = process.cpuUsage();
  const result = await run();
  const own = cpuSecondsSince(cpu);
  return { ...result, cpuSeconds: own + (await processCpuSeconds(serverPid)) - server };
}

/**
 * First the pipeline's own path alone on a fresh schema (no other format's merges running):
 * each batch's violations, then its app_usage rows, Native blocks through insertFormatted, one
 * batch after another as the sink writes them; that is the stage, in time and CPU (the merges
 * its parts start meanwhile included). Then, for comparison, every batch's rows once per format
 * (round-robin, as insertBench does, so merges fall on all), a format dropping out once it has
 * spent INSERT_BUDGET_MS (the JSON ones take seconds per batch). Each format's rows get their
 * own stream_seq range: identical blocks would be deduplicated, not inserted.
 */
async function timeInserts(
  dataDir: string,
  outputs: readonly BatchOutput[],
  bodies: ReadonlyArray<{ appUsage: Buffer; violations: Buffer; violationRows: number }>,
): Promise<{ seconds: number; cpuSeconds: number; formats: LimitsInsert[]; violationRowsPerS: number }> {
  await using ch = await openClickHouse({ clickhouseUrl: null, dataDir: join(dataDir, 'chdb'), database: 'limits' });
  await migrate(ch, { retentionDays: 30 });
  const settings = { date_time_input_format: 'basic' } as const;

  let violationMs = 0;
  let violationRows = 0;
  const cpu = process.cpuUsage();
  const t0 = performance.now();
  for (const b of bodies) {
    if (b.violationRows > 0) {
      const t = performance.now();
      await ch.insertFormatted({ table: 'violations', columns: VIOLATIONS.columns, format: 'Native', body: b.violations, settings });
      violationMs += performance.now() - t;
      violationRows += b.violationRows;
    }
    await ch.insertFormatted({ table: 'app_usage', columns: APP_USAGE.columns, format: 'Native', body: b.appUsage, settings });
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpuSeconds = cpuSecondsSince(cpu);

  const seqColumn = APP_USAGE.index('stream_seq');
  const rowsOf = (pass: number, o: BatchOutput): AppUsageRow[] =>
    o.appUsage.map((values) => {
      const row = Object.fromEntries(APP_USAGE.columns.map((c, i) => [c, values[i]])) as unknown as AppUsageRow;
      row.stream_seq = (values[seqColumn] as number) + (pass + 1) * 1e9;
      return row;
    });
  const tried = new Map<InsertBenchFormat, { ms: number; rows: number; inserts: number }>(FORMATS.map((f) => [f, { ms: 0, rows: 0, inserts: 0 }]));
  const first = outputs[0];
  if (first) for (const [k, f] of FORMATS.entries()) await insertOnce(ch, f, rowsOf(FORMATS.length + k, first).slice(0, 1000)); // warm-up
  for (const o of outputs) {
    for (const [k, f] of FORMATS.entries()) {
      const sum = tried.get(f);
      if (!sum || sum.ms >= INSERT_BUDGET_MS) continue;
      sum.ms += (await insertOnce(ch, f, rowsOf(k, o))).insertMs;
      sum.rows += o.appUsage.length;
      sum.inserts++;
    }
  }
  const formats = [...tried].map(([format, sum]): LimitsInsert => ({
    format,
    rows_per_insert: round(sum.rows / Math.max(1, sum.inserts)),
    inserts: sum.inserts,
    rows_per_s: round(sum.rows / (sum.ms / 1000)),
  }));
  return { seconds, cpuSeconds, formats, violationRowsPerS: violationRows === 0 ? 0 : round(violationRows / (violationMs / 1000)) };
}

function chunk<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

export async function runLimitsCli(options: LimitsOptions & { json: boolean; resultsDir?: string | undefined }): Promise<LimitsResult> {
  const result = await benchLimits(options);
  const file = await writeResults('limits', { ...result }, options.resultsDir);
  if (options.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } else {
    console.log(`\nstage limits: ${result.events} events in ${result.frames} frames, ${result.cores} cores`);
    console.table(benchReportTable(result.stages));
    console.log('\napp_usage inserts (embedded chdb, real schema)');
    console.table(benchReportTable(result.inserts));
    console.log(`violations insert (Native, sink path): ${result.violations_insert_rows_per_s.toLocaleString('en-US')} rows/s`);
    console.log(`limit: ${result.limit_stage} at ${result.limit_events_per_s.toLocaleString('en-US')} events/s`);
    console.log(
      `CPU: the pipeline's stages take ${result.pipeline_cpu_us_per_event} µs per event together; ${result.cores} cores doing only that: ` +
        `${result.cpu_ceiling_events_per_s.toLocaleString('en-US')} events/s`,
    );
  }
  process.stderr.write(`bench: results written to ${file}\n`);
  return result;
}

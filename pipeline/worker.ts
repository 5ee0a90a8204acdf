/**
 * A pipeline worker thread (piscina). It holds its own control-plane view (a KV watch) and
 * compiled policy modules, and turns a batch of raw frames into ClickHouse rows (Native blocks),
 * alerts and remediation requests. The main thread only moves bytes.
 */
import { workerData } from 'node:worker_threads';
import { Packr } from 'msgpackr';
import { move, transferableSymbol, valueSymbol } from 'piscina';
import { ControlPlaneView } from '../core/controlPlane/index.js';
import { connectNats } from '../core/nats/index.js';
import { deadLetterRow } from '../core/deadLetters.js';
import { encodeAlerts } from '../core/live.js';
// The pure modules, not the folder's index: a worker thread has no use for the ClickHouse client.
import { APP_USAGE, DEAD_LETTERS, VIOLATIONS } from '../core/clickhouse/rows.js';
import { TsvWriter } from '../core/clickhouse/tsv.js';
import { processBatch, type BatchMessage, type AutoRemediationRequest, type DeadLetter } from './batchProcessor.js';
import { controlPlaneDirectory, PolicyRegistry, remoteAsc } from '../rules-wasm/index.js';

export interface WorkerConfig {
  natsUrl: string;
  cacheDir?: string | undefined;
  /** The BroadcastChannel of the process's AssemblyScript host (rules-wasm/ascHost.ts); unset, this thread compiles. */
  ascChannel?: string | undefined;
}

export interface WorkerTask {
  messages: BatchMessage[];
  /** Sequences whose violation / dead-letter rows are stored already (redelivered after a crash). */
  skipViolations: number[];
  skipDeadLetters: number[];
}

export interface WorkerResult {
  /** app_usage rows, one Native block (APP_USAGE.columns order). */
  appUsage: Uint8Array;
  appUsageRows: number;
  /** violations rows, one Native block. */
  violations: Uint8Array;
  violationRows: number;
  /** TSV rows for dead_letters (DEAD_LETTERS.columns order), one per message with rejections. */
  deadLetterTsv: Uint8Array;
  deadLetterRows: number;
  deadLetters: DeadLetter[];
  /** Payloads of messages with dead letters, by sequence, for the DLQ stream. */
  dlqPayloads: Array<{ seq: number; subject: string; data: Uint8Array }>;
  alerts: Array<{ enterpriseId: string; count: number; payload: Uint8Array }>;
  remediations: Array<{ request: AutoRemediationRequest; payload: Uint8Array }>;
  storedSeqs: number[];
  counts: ReturnType<typeof processBatch>['counts'];
  policyVersions: Record<string, string>;
  /** What this thread has to say since its last batch (policy compile failures), for the main thread's log. */
  notices: string[];
}

interface WorkerState {
  view: ControlPlaneView;
  registry: PolicyRegistry;
  directory: ReturnType<typeof controlPlaneDirectory>;
}

const config = workerData as WorkerConfig;
const VIOLATION_SEQ_COLUMN = VIOLATIONS.index('stream_seq');
const packr = new Packr({ useRecords: false });
/** Frame bytes per event, about (the simulator's frames run 50–60): room for the rows without growing. */
const FRAME_BYTES_PER_EVENT = 40;
let state: Promise<WorkerState> | null = null;
let usageWriter: ReturnType<typeof APP_USAGE.nativeWriter> | undefined;
const violationWriter = VIOLATIONS.nativeWriter();
/** Handed back with the next batch: a worker thread has no log of its own (one log per process). */
let notices: string[] = [];

/**
 * Test hooks, for tests of the pipeline's fault handling (pipeline/pipeline.test.ts): a message
 * on exactly this subject makes the task throw (TOWERWATCH_TEST_POISON_SUBJECT) or ends the
 * worker thread as a crash would (TOWERWATCH_TEST_CRASH_SUBJECT). Unset (always, outside
 * tests) they cost one comparison per message.
 */
const POISON_SUBJECT = process.env['TOWERWATCH_TEST_POISON_SUBJECT'] || null;
const CRASH_SUBJECT = process.env['TOWERWATCH_TEST_CRASH_SUBJECT'] || null;

async function init(): Promise<WorkerState> {
  const nc = await connectNats(config.natsUrl, 'towerwatch pipeline worker');
  const view = await ControlPlaneView.open(nc);
  const registry = await PolicyRegistry.open(view, {
    cacheDir: config.cacheDir,
    compileWasm: config.ascChannel === undefined ? undefined : remoteAsc(config.ascChannel),
    onError: (enterpriseId, err) => void notices.push(`policies of ${enterpriseId} did not compile; the previous version stays in force: ${err.message}`),
  });
  return { view, registry, directory: controlPlaneDirectory(view) };
}

export default async function runBatch(task: WorkerTask): Promise<WorkerResult> {
  // A failed start (NATS unreachable) is retried by the next task, not remembered for good.
  const s = await (state ??= init().catch((err: unknown) => {
    state = null;
    throw err;
  }));
  if (POISON_SUBJECT !== null || CRASH_SUBJECT !== null) {
    for (const m of task.messages) {
      if (m.subject === CRASH_SUBJECT) process.exit(70);
      if (m.subject === POISON_SUBJECT) throw new Error(`test poison message on ${m.subject}`);
    }
  }
  const skipV = new Set(task.skipViolations);
  let frameBytes = 0;
  for (const m of task.messages) frameBytes += m.data.byteLength;
  // One pair of writers per thread, kept from batch to batch (they keep their room).
  const usage = (usageWriter ??= APP_USAGE.nativeWriter(frameBytes / FRAME_BYTES_PER_EVENT)).reset();
  const violations = violationWriter.reset();
  const out = processBatch(
    task.messages,
    { directory: s.directory, view: s.view, module: (id) => s.registry.module(id), shadowModule: (id) => s.registry.shadowModule(id) },
    {
      appUsage: (values) => APP_USAGE.write(usage, values),
      violation: (values) => {
        if (skipV.size > 0 && skipV.has(values[VIOLATION_SEQ_COLUMN] as number)) return;
        VIOLATIONS.write(violations, values);
      },
    },
  );
  const skipD = new Set(task.skipDeadLetters);
  const deadLetters = skipD.size ? out.deadLetters.filter((d) => !skipD.has(d.seq)) : out.deadLetters;
  // Dead letters already stored were also published to the DLQ stream before the crash.
  const dlqSeqs = new Set(deadLetters.map((d) => d.seq));
  const payloads = new Map(task.messages.filter((m) => dlqSeqs.has(m.seq)).map((m) => [m.seq, m]));
  // One row per message: its payload once, its reasons capped (core/deadLetters.ts).
  const now = Date.now();
  const deadLetterTsv = new TsvWriter(deadLetters.length > 0 ? undefined : 1);
  for (const d of deadLetters) {
    DEAD_LETTERS.writeRow(deadLetterTsv, deadLetterRow('USAGE', d.subject, d.seq, d.summary, payloads.get(d.seq)?.data ?? new Uint8Array(), now));
  }

  const alertsByEnterprise = new Map<string, typeof out.alerts>();
  for (const a of out.alerts) {
    let list = alertsByEnterprise.get(a.enterprise_id);
    if (!list) alertsByEnterprise.set(a.enterprise_id, (list = []));
    list.push(a);
  }
  // Row counts from the writers, before finish() resets them: what each body holds.
  const appUsageRows = usage.rows;
  const violationRows = violations.rows;
  const result: WorkerResult = {
    appUsage: usage.finish(),
    appUsageRows,
    violations: violations.finish(),
    violationRows,
    deadLetterTsv: deadLetterTsv.finish(),
    deadLetterRows: deadLetters.length,
    deadLetters,
    dlqPayloads: [...payloads.values()].map((m) => ({ seq: m.seq, subject: m.subject, data: m.data })),
    alerts: [...alertsByEnterprise].map(([enterpriseId, list]) => ({ enterpriseId, count: list.length, payload: encodeAlerts(list) })),
    remediations: out.remediations.map((request) => ({ request, payload: Uint8Array.from(packr.pack(request)) })),
    storedSeqs: out.storedSeqs,
    counts: out.counts,
    policyVersions: out.policyVersions,
    notices: takeNotices(),
  };
  // The row blocks (megabytes a batch) move to the main thread instead of being copied: each
  // owns its ArrayBuffer (native.ts, tsv.ts finish()), and nothing here holds them after.
  return moved(result, [result.appUsage.buffer, result.violations.buffer, result.deadLetterTsv.buffer]);
}

/**
 * `value` wrapped for piscina to post with `buffers` transferred (it moves a top-level
 * Transferable only); typed as what the main thread receives, `value` itself.
 */
function moved<T extends object>(value: T, buffers: ArrayBufferLike[]): T {
  return move({ [transferableSymbol]: buffers, [valueSymbol]: value }) as unknown as T;
}

function takeNotices(): string[] {
  const taken = notices;
  notices = [];
  return taken;
}

/**
 * The pipeline's main thread: I/O only. It pulls frames from the shared durable consumer,
 * hands each batch to a worker, writes the worker's rows to ClickHouse, publishes alerts and
 * remediation requests, and acks a message only once its rows are stored.
 *
 * Exactly-once counts over at-least-once delivery: a batch's inserts carry a deduplication
 * token made from its sequences (a retried insert is dropped by ClickHouse), and a message
 * redelivered after a crash is first looked up by its stream sequence — rows already stored
 * are not written again, whatever batch the message lands in this time.
 */
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { createHash } from 'node:crypto';
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  type Consumer,
  type JetStreamClient,
  type JsMsg,
} from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { Piscina } from 'piscina';
import { isTransientNatsError, publishWithRetry } from '../core/natsRetry.js';
import { remediationMsgId } from '../core/remediation.js';
import { DEFAULT_RETRY_BUDGET_MS, RetryBudgetExhaustedError } from '../core/retry.js';
import { deadLetterHeaders, remediationSubject, USAGE_STREAM } from '../core/streams.js';
import { ClickHouseSinkError, SinkErrorCode } from './clickhouseSink.js';
import { MessageQueue } from './messageQueue.js';
import type { WorkerConfig, WorkerResult, WorkerTask } from './worker.js';

export const DEFAULT_CONSUMER = 'pipeline';
export const ACK_WAIT_MS = 60_000;
/** How long fetching pauses when ClickHouse stays down through a batch's retries. */
export const PAUSE_ON_OUTAGE_MS = 5_000;

/** Where rows go; ClickHouseSink implements it. */
export interface RowSink {
  insert(table: string, tsv: Uint8Array, options: { token: string }): Promise<void>;
  storedSeqs(table: string, seqs: readonly number[]): Promise<Set<number>>;
}

export interface PipelineOptions {
  nc: NatsConnection;
  /** For the workers' own connections. */
  natsUrl: string;
  sink: RowSink;
  /** Worker threads. @default the cores available */
  threads?: number;
  /** Messages (frames) per batch. @default 64 */
  batchMessages?: number;
  /**
   * How long a batch waits to fill once its first message is in. Under load batches fill at
   * once; at a trickle this bounds the latency a message adds waiting for company. @default 5
   */
  lingerMs?: number;
  /** Batches in flight at once. @default threads + 1 */
  maxInFlight?: number;
  consumer?: string;
  /** The consumer's ack_wait when this process creates it; also paces the in-flight keep-alive. @default ACK_WAIT_MS */
  ackWaitMs?: number;
  cacheDir?: string | undefined;
  /** How long a batch's JetStream publishes are retried through a broker blip. @default DEFAULT_RETRY_BUDGET_MS */
  natsRetryMs?: number;
  log?: (line: string) => void;
}

export interface PipelineCounters {
  /** Messages fetched (processed or not yet). */
  fetched: number;
  messages: number;
  events: number;
  stored: number;
  violations: number;
  unregistered: number;
  deadLetters: number;
  deadLetterMessages: number;
  redeliveredSkipped: number;
  remediations: number;
  batches: number;
  insertMs: number;
  insertRetries: number;
  /** JetStream publishes retried through a broker blip. */
  publishRetries: number;
  /** Batches handed back (nak) because NATS or ClickHouse stayed away through their retries. */
  batchesHandedBack: number;
  policyVersions: Record<string, string>;
}

export class Pipeline {
  readonly counters: PipelineCounters = {
    fetched: 0,
    messages: 0,
    events: 0,
    stored: 0,
    violations: 0,
    unregistered: 0,
    deadLetters: 0,
    deadLetterMessages: 0,
    redeliveredSkipped: 0,
    remediations: 0,
    batches: 0,
    insertMs: 0,
    insertRetries: 0,
    publishRetries: 0,
    batchesHandedBack: 0,
    policyVersions: {},
  };
  /** Worker threads that exited while the pipeline ran (piscina replaces them), and errors of idle workers. */
  readonly workerStats = { exits: 0, errors: 0 };
  readonly #opts: Required<Omit<PipelineOptions, 'cacheDir' | 'log'>> & Pick<PipelineOptions, 'cacheDir' | 'log'>;
  readonly #js: JetStreamClient;
  readonly #pool: Piscina<WorkerTask, WorkerResult>;
  readonly #inFlight = new Set<Promise<void>>();
  #stopping = false;
  #loop: Promise<void> = Promise.resolve();
  #failure: Error | null = null;
  #pausedUntil = 0;
  /** Stream sequences some batch of this process is working on. */
  readonly #seqsInFlight = new Set<number>();
  #ready: Promise<void> = Promise.resolve();
  /** The consumer's actual ack_wait (it may predate this process's options). */
  #ackWaitMs = ACK_WAIT_MS;

  private constructor(opts: PipelineOptions) {
    const threads = opts.threads ?? Math.max(1, availableParallelism());
    // Defaults after the spread: an option passed as `undefined` must not erase its default.
    this.#opts = {
      ...opts,
      threads,
      batchMessages: opts.batchMessages ?? 64,
      lingerMs: opts.lingerMs ?? 5,
      maxInFlight: opts.maxInFlight ?? threads + 1,
      consumer: opts.consumer ?? DEFAULT_CONSUMER,
      ackWaitMs: opts.ackWaitMs ?? ACK_WAIT_MS,
      natsRetryMs: opts.natsRetryMs ?? DEFAULT_RETRY_BUDGET_MS,
    };
    this.#js = jetstream(opts.nc);
    const workerData: WorkerConfig = { natsUrl: opts.natsUrl, cacheDir: opts.cacheDir };
    this.#pool = new Piscina({
      filename: new URL('./worker.js', import.meta.url).href,
      minThreads: threads,
      maxThreads: threads,
      workerData,
      idleTimeout: Infinity,
      // Workers hold a live control-plane watch: with piscina's default ('sync') an idle
      // worker blocks in Atomics.wait and its event loop (and so the watch) stalls.
      atomics: 'async',
    });
    // A worker that exits (crash, out of memory) is replaced by piscina; count it. Its batch
    // fails with the error. An idle worker's error is emitted on the pool: without a listener
    // it would crash the process.
    this.#pool.on('workerDestroy', () => {
      if (!this.#stopping) this.workerStats.exits++;
    });
    this.#pool.on('error', (err: unknown) => {
      this.workerStats.errors++;
      this.#opts.log?.(`pipeline: worker thread failed: ${err instanceof Error ? err.message : String(err)}`);
    });
  }

  /** The pool's live worker threads (for health checks and tests). */
  workerThreads(): readonly Worker[] {
    return this.#pool.threads;
  }

  static async start(opts: PipelineOptions): Promise<Pipeline> {
    const pipeline = new Pipeline(opts);
    const consumer = await pipeline.#ensureConsumer();
    pipeline.#ready = pipeline.#warmUp();
    // A worker that cannot start fails its first batch too; stop() also ends warm-ups early.
    pipeline.#ready.catch(() => undefined);
    pipeline.#loop = pipeline.#run(consumer);
    return pipeline;
  }

  /** Resolves once every worker has loaded the control plane and compiled the policies. */
  ready(): Promise<void> {
    return this.#ready;
  }

  /** Rejects if the loop failed for good (not for data: bad data goes to the dead-letter path). */
  done(): Promise<void> {
    return this.#loop;
  }

  /** Stops fetching, finishes and acks what is in flight, closes the workers. */
  async stop(): Promise<void> {
    this.#stopping = true;
    await this.#loop.catch(() => undefined);
    await Promise.allSettled(this.#inFlight);
    // Every batch has settled above; what may still run is a warm-up compile: end it now.
    await this.#pool.destroy();
  }

  /**
   * Starts every worker (control-plane view loaded, policies compiled) right away rather than
   * on its first batch, so early events do not wait seconds behind a compiler. An empty task
   * keeps a worker busy until it is ready, so N at once reach N workers.
   */
  async #warmUp(): Promise<void> {
    const empty: WorkerTask = { messages: [], skipViolations: [], skipDeadLetters: [] };
    await Promise.all(Array.from({ length: this.#opts.threads }, () => this.#pool.run(empty)));
  }

  async #ensureConsumer(): Promise<Consumer> {
    const jsm = await jetstreamManager(this.#opts.nc);
    const name = this.#opts.consumer;
    try {
      const info = await jsm.consumers.info(USAGE_STREAM, name);
      this.#ackWaitMs = info.config.ack_wait ? info.config.ack_wait / 1_000_000 : this.#opts.ackWaitMs;
    } catch {
      this.#ackWaitMs = this.#opts.ackWaitMs;
      await jsm.consumers.add(USAGE_STREAM, {
        durable_name: name,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: this.#opts.ackWaitMs * 1_000_000,
        max_ack_pending: 4096,
        max_deliver: -1,
      });
    }
    return this.#js.consumers.get(USAGE_STREAM, name);
  }

  async #run(consumer: Consumer): Promise<void> {
    const { batchMessages, maxInFlight, lingerMs } = this.#opts;
    // A continuous pull (consume) rather than fetch-per-batch: a fetch waits out its expiry to
    // fill, and with nats-server 2.9 a message sent to a just-expired fetch stays unseen until
    // ack_wait redelivers it (a minute). The consumer's own buffer (two batches) is refilled
    // only as it is read, so a busy pipeline stops pulling.
    const queue = new MessageQueue(
      () => consumer.consume({ max_messages: batchMessages * 2, expires: 30_000 }),
      batchMessages * 2,
      (err) => this.#opts.log?.(`pipeline: consuming failed, retrying: ${err.message}`),
    );
    // Buffered messages belong to this process as much as batches do.
    const keepAlive = setInterval(() => queue.forEach((m) => m.working()), this.#ackWaitMs / 3);
    try {
      while (!this.#stopping) {
        if (this.#failure) throw this.#failure;
        while (this.#inFlight.size >= maxInFlight) await Promise.race(this.#inFlight);
        if (this.#pausedUntil > Date.now()) {
          await sleep(Math.min(1000, this.#pausedUntil - Date.now()));
          continue;
        }
        const batch = await queue.take(batchMessages, lingerMs, () => this.#stopping);
        if (batch.length === 0) continue;
        this.counters.fetched += batch.length;
        const p: Promise<void> = this.#process(batch)
          .catch(async (err: unknown) => {
            if (isOutage(err)) {
              // ClickHouse or NATS stayed away through the retries: hand the messages back for
              // later and hold off fetching. Nothing was acked, so nothing is lost.
              this.#opts.log?.(`pipeline: ${(err as Error).message}; pausing ${PAUSE_ON_OUTAGE_MS / 1000} s, nothing is lost`);
              this.counters.batchesHandedBack++;
              for (const m of batch) nakQuietly(m, PAUSE_ON_OUTAGE_MS);
              this.#pausedUntil = Date.now() + PAUSE_ON_OUTAGE_MS;
              return;
            }
            // A bug, or ClickHouse refusing the rows for good: not acked, so nothing is lost
            // (JetStream redelivers), but going on would spin.
            this.#failure ??= err instanceof Error ? err : new Error(String(err));
          })
          .finally(() => this.#inFlight.delete(p));
        this.#inFlight.add(p);
      }
    } finally {
      clearInterval(keepAlive);
      // Taken from the server but never processed: back at once, for another replica or the next start.
      for (const m of await queue.close()) m.nak();
    }
    await Promise.allSettled(this.#inFlight);
    if (this.#failure) throw this.#failure;
  }

  async #process(batch: JsMsg[]): Promise<void> {
    const c = this.counters;
    const sink = this.#opts.sink;
    // Keep the messages ours while ClickHouse is slow, instead of letting them be redelivered.
    const keepAlive = setInterval(() => batch.forEach((m) => m.working()), this.#ackWaitMs / 3);
    let owned: number[] = [];
    try {
      // One copy per stream sequence. nats-server 2.9 can hand out a message twice in one
      // fetch after a failed delivery (one copy not even marked redelivered; fixed upstream in
      // nats-server#5305), and a copy may arrive while another batch still holds the first:
      // that one is left unacked here, and comes back later to be found stored.
      const unique = new Map<number, JsMsg>();
      for (const m of batch) {
        if (this.#seqsInFlight.has(m.seq)) continue;
        const seen = unique.get(m.seq);
        if (!seen || m.redelivered) unique.set(m.seq, m);
      }
      owned = [...unique.keys()];
      for (const seq of owned) this.#seqsInFlight.add(seq);
      // Delivery counts cannot be trusted (above), so every sequence is looked up.
      const [usage, violations, dead] = await Promise.all([
        sink.storedSeqs('app_usage', owned),
        sink.storedSeqs('violations', owned),
        sink.storedSeqs('dead_letters', owned),
      ]);
      // In app_usage means done (it is written last); anything else is processed again,
      // minus the rows already stored.
      const todo = [...unique.values()].filter((m) => !usage.has(m.seq));
      c.redeliveredSkipped += unique.size - todo.length;
      for (const m of batch) if (usage.has(m.seq) && unique.has(m.seq)) m.ack();
      const skipViolations = [...violations];
      const skipDeadLetters = [...dead];
      if (todo.length === 0) return;
      const task: WorkerTask = {
        messages: todo.map((m) => ({ seq: m.seq, subject: m.subject, data: m.data })),
        skipViolations,
        skipDeadLetters,
      };
      const r = await this.#pool.run(task);
      const token = createHash('sha1').update(todo.map((m) => m.seq).join(',')).digest('hex');

      // Order matters for recovery: everything else before app_usage, whose rows mark a
      // message as done (see #process's redelivery check).
      // Publishes carry a msgID, so one retried after a lost ack is stored once.
      const retry = { budgetMs: this.#opts.natsRetryMs, onRetry: () => void c.publishRetries++ };
      for (const d of r.dlqPayloads) {
        const reasons = r.deadLetters.filter((x) => x.seq === d.seq);
        await publishWithRetry(this.#js, `dlq.${d.subject}`, d.data, { msgID: `dlq:${d.seq}`, headers: deadLetterHeaders(d.subject, d.seq, reasons) }, retry);
      }
      await Promise.all(
        r.remediations.map(({ request, payload }) =>
          publishWithRetry(this.#js, remediationSubject(request.enterprise_id, request.tower_id), payload, { msgID: remediationMsgId(request.alert_id, request.action) }, retry),
        ),
      );
      const started = performance.now();
      if (r.deadLetterRows > 0) await sink.insert('dead_letters', r.deadLetterTsv, { token: `dead_letters:${token}` });
      if (r.violationRows > 0) await sink.insert('violations', r.violations, { token: `violations:${token}` });
      if (r.appUsageRows > 0) await sink.insert('app_usage', r.appUsage, { token: `app_usage:${token}` });
      c.insertMs += performance.now() - started;

      for (const a of r.alerts) this.#opts.nc.publish(`alerts.${a.enterpriseId}`, a.payload);
      const done = new Set(todo.map((m) => m.seq));
      for (const m of batch) if (done.has(m.seq)) m.ack();

      c.batches++;
      c.messages += todo.length;
      c.events += r.counts.events;
      c.stored += r.appUsageRows;
      c.violations += r.counts.violations;
      c.unregistered += r.counts.unregistered;
      c.deadLetters += r.counts.rejectedEvents + r.counts.rejectedMessages;
      c.deadLetterMessages += r.dlqPayloads.length;
      c.remediations += r.remediations.length;
      Object.assign(c.policyVersions, r.policyVersions);
    } finally {
      clearInterval(keepAlive);
      for (const seq of owned) this.#seqsInFlight.delete(seq);
    }
  }

}

/** A failure of a dependency that is away for now (retries spent), not of the data. */
function isOutage(err: unknown): boolean {
  if (err instanceof ClickHouseSinkError && err.code === SinkErrorCode.RetriesExhausted) return true;
  return err instanceof RetryBudgetExhaustedError || isTransientNatsError(err);
}

/** nak on a connection that closed meanwhile throws; the message comes back after ack_wait anyway. */
function nakQuietly(m: JsMsg, delayMs?: number): void {
  try {
    m.nak(delayMs);
  } catch {
    // redelivered after ack_wait
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

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
import { setTimeout as sleep } from 'node:timers/promises';
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { createHash, randomUUID } from 'node:crypto';
import { jetstream, type Consumer, type JetStreamClient, type JsMsg } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { Piscina } from 'piscina';
import { DEFAULT_MAX_DELIVER } from '../core/config.js';
import { integerOption, nameOption, numberOption } from '../core/options.js';
import { REJECTION, deadLetterRow, summaryOf } from '../core/deadLetters.js';
import { alertsSubject } from '../core/live.js';
import { deadLetterHeaders, ensureConsumer, isTransientNatsError, publishWithRetry, remediationSubject, USAGE_STREAM } from '../core/nats/index.js';
import { remediationMsgId } from '../core/remediation.js';
import { backoffStep, DEFAULT_RETRY_BUDGET_MS, RetryBudgetExhaustedError } from '../core/retry.js';
import { DEAD_LETTERS, type InsertTable } from '../core/clickhouse/index.js';
import { ClickHouseSinkError, SinkErrorCode, type RowSink } from './clickhouseSink.js';
import { ConsumerLoop } from './consumerLoop.js';
import { MessageQueue, nakQuietly, stallCheckOf } from './messageQueue.js';
import type { WorkerConfig, WorkerResult, WorkerTask } from './worker.js';
import { AscHost } from '../rules-wasm/index.js';
import type { LogLine } from '../core/log.js';

export const DEFAULT_CONSUMER = 'pipeline';
export const ACK_WAIT_MS = 60_000;
/** Messages (frames) per batch. */
export const DEFAULT_BATCH_MESSAGES = 64;
/** How long a batch waits to fill once its first message is in. */
export const DEFAULT_LINGER_MS = 5;
/**
 * Shortest time between the starts of two group commits. Alerts do not wait for it (they
 * leave when a batch is evaluated); rows reach the tables up to this much later. Below
 * saturation a commit per batch made a part per batch: at 117k events/s, 13.2 µs of CPU per
 * event against 10.7–11.7 with 250 ms (`bench e2e --rate 117000`, same latencies).
 */
export const DEFAULT_COMMIT_INTERVAL_MS = 250;
/** How long fetching pauses when ClickHouse stays down through a batch's retries. */
export const PAUSE_ON_OUTAGE_MS = 5_000;
/** Deliveries of a message whose processing fails before it is dead-lettered (TOWERWATCH_MAX_DELIVER). */
export { DEFAULT_MAX_DELIVER };
/** Delay before a failed message comes back: doubles with each delivery, at most {@link MAX_RETRY_DELAY_MS}. */
export const RETRY_DELAY_MS = 1_000;
export const MAX_RETRY_DELAY_MS = 30_000;

/** Where rows go (pipeline/clickhouseSink.ts: ClickHouseSink implements it). */
export type { RowSink };

export interface PipelineOptions {
  nc: NatsConnection;
  /** For the workers' own connections. */
  natsUrl: string;
  sink: RowSink;
  /** Worker threads. @default the cores available */
  threads?: number;
  /** Messages (frames) per batch. @default DEFAULT_BATCH_MESSAGES */
  batchMessages?: number;
  /**
   * How long a batch waits to fill once its first message is in. Under load batches fill at
   * once; at a trickle this bounds the latency a message adds waiting for company. @default DEFAULT_LINGER_MS
   */
  lingerMs?: number;
  /** Batches in flight at once. @default threads + 1 */
  maxInFlight?: number;
  /** Shortest time between the starts of two group commits (0: one as soon as the last ends). @default DEFAULT_COMMIT_INTERVAL_MS */
  commitIntervalMs?: number;
  consumer?: string;
  /** The consumer's ack_wait when this process creates it; also paces the in-flight keep-alive. @default ACK_WAIT_MS */
  ackWaitMs?: number;
  cacheDir?: string | undefined;
  /** How long a batch's JetStream publishes are retried through a broker blip. @default DEFAULT_RETRY_BUDGET_MS */
  natsRetryMs?: number;
  log?: LogLine;
  /**
   * Deliveries of a message whose processing fails (a worker throws or dies on it) before it
   * goes to the dead letters with `processing_failed` and is acked. @default DEFAULT_MAX_DELIVER
   */
  maxDeliver?: number;
  /** First delay before a failed message is redelivered (doubling). @default RETRY_DELAY_MS */
  retryDelayMs?: number;
}

/** The options {@link resolvePipelineOptions} fills in and checks. */
export type PipelineTuning = Pick<
  PipelineOptions,
  'threads' | 'batchMessages' | 'lingerMs' | 'maxInFlight' | 'commitIntervalMs' | 'consumer' | 'ackWaitMs' | 'natsRetryMs' | 'maxDeliver' | 'retryDelayMs'
>;

/**
 * The tuning options with their defaults (an option given as `undefined` keeps its default).
 * @throws {RangeError} or {TypeError} naming an option that is out of range or of the wrong kind
 */
export function resolvePipelineOptions(o: PipelineTuning): Required<PipelineTuning> {
  const threads = integerOption('threads', o.threads, Math.max(1, availableParallelism()));
  return {
    threads,
    batchMessages: integerOption('batchMessages', o.batchMessages, DEFAULT_BATCH_MESSAGES),
    lingerMs: numberOption('lingerMs', o.lingerMs, DEFAULT_LINGER_MS),
    maxInFlight: integerOption('maxInFlight', o.maxInFlight, threads + 1),
    commitIntervalMs: numberOption('commitIntervalMs', o.commitIntervalMs, DEFAULT_COMMIT_INTERVAL_MS),
    consumer: nameOption('consumer', o.consumer, DEFAULT_CONSUMER),
    ackWaitMs: numberOption('ackWaitMs', o.ackWaitMs, ACK_WAIT_MS, 0, true),
    natsRetryMs: numberOption('natsRetryMs', o.natsRetryMs, DEFAULT_RETRY_BUDGET_MS),
    maxDeliver: integerOption('maxDeliver', o.maxDeliver, DEFAULT_MAX_DELIVER),
    retryDelayMs: numberOption('retryDelayMs', o.retryDelayMs, RETRY_DELAY_MS),
  };
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
  /** Group commits stored (each one insert per table, of one or more batches). */
  batches: number;
  insertMs: number;
  /** Time spent looking up which sequences are stored already (one query over three tables per group commit). */
  lookupMs: number;
  insertRetries: number;
  /** Worker tasks that threw or whose worker died (each retried, the messages one by one). */
  processingFailures: number;
  /** Messages dead-lettered with `processing_failed` after maxDeliver deliveries. */
  failedMessages: number;
  /** Worker threads that ended unexpectedly (piscina starts a new one). */
  workersLost: number;
  /** Errors raised by idle worker threads (logged; without a listener they would end the process). */
  workerErrors: number;
  /** JetStream publishes retried through a broker blip. */
  publishRetries: number;
  /** Batches handed back (nak) because NATS or ClickHouse stayed away through their retries. */
  batchesHandedBack: number;
  policyVersions: Record<string, string>;
}

export class Pipeline extends ConsumerLoop {
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
    lookupMs: 0,
    insertRetries: 0,
    processingFailures: 0,
    failedMessages: 0,
    workersLost: 0,
    workerErrors: 0,
    publishRetries: 0,
    batchesHandedBack: 0,
    policyVersions: {},
  };
  readonly #opts: PipelineOptions & Required<PipelineTuning>;
  readonly #retry = { budgetMs: DEFAULT_RETRY_BUDGET_MS, onRetry: () => void this.counters.publishRetries++ };
  readonly #js: JetStreamClient;
  readonly #pool: Piscina<WorkerTask, WorkerResult>;
  /** Compiles the workers' policies, so none of them loads AssemblyScript. */
  readonly #asc: AscHost;
  readonly #inFlight = new Set<Promise<void>>();
  #messagesInFlight = 0;
  /** Evaluated batches waiting for the next group commit, and whether one is running. */
  #pending: Submission[] = [];
  #committing = false;
  /** When the last group commit started, and the timer that starts the next one when it is too soon. */
  #lastCommitAt = Number.NEGATIVE_INFINITY;
  #commitTimer: NodeJS.Timeout | null = null;
  #pausedUntil = 0;
  /** Stream sequences some batch of this process is working on, and the batch's claim. */
  readonly #seqsInFlight = new Map<number, object>();
  #ready: Promise<void> = Promise.resolve();
  /** The consumer's actual ack_wait (it may predate this process's options). */
  #ackWaitMs = ACK_WAIT_MS;

  private constructor(opts: PipelineOptions) {
    super();
    // Resolved after the spread: an option passed as `undefined` must not erase its default.
    this.#opts = { ...opts, ...resolvePipelineOptions(opts) };
    const { threads } = this.#opts;
    this.#retry.budgetMs = this.#opts.natsRetryMs;
    this.#js = jetstream(opts.nc);
    // Named per pipeline: a channel is process-wide, and tests run several pipelines in one.
    const ascChannel = `towerwatch-asc-${randomUUID()}`;
    // Gone a second after the start-up burst (one compile per enterprise, back to back): its
    // isolate is 150–200 MB, and a prefilled stream is being drained by then.
    this.#asc = new AscHost(ascChannel, { idleSeconds: 1 });
    const workerData: WorkerConfig = { natsUrl: opts.natsUrl, cacheDir: opts.cacheDir, ascChannel };
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
    // A worker that dies (a crash, out of memory, an uncaught error) fails its task, which is
    // retried message by message; piscina starts a new worker. An idle worker's error is
    // emitted on the pool: without a listener it would crash the process.
    this.#pool.on('workerDestroy', () => {
      if (this.stopping) return;
      this.counters.workersLost++;
    });
    this.#pool.on('error', (err: unknown) => {
      this.counters.workerErrors++;
      this.#opts.log?.(`pipeline: worker thread failed: ${errorMessage(err)}`, 'error');
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
    // A worker that cannot start fails its first batch too; close() also ends warm-ups early.
    pipeline.#ready.catch(() => undefined);
    pipeline.follow(pipeline.#run(consumer));
    return pipeline;
  }

  /** Resolves once every worker has loaded the control plane and compiled the policies. */
  ready(): Promise<void> {
    return this.#ready;
  }

  /** After the loop: finishes and acks what is in flight, closes the workers. */
  protected override async release(): Promise<void> {
    await Promise.allSettled(this.#inFlight);
    // Every batch has settled above; what may still run is a warm-up compile: end it now.
    await this.#pool.destroy();
    await this.#asc.close();
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
    const name = this.#opts.consumer;
    const config = await ensureConsumer(this.#opts.nc, USAGE_STREAM, name, { ackWaitMs: this.#opts.ackWaitMs, maxAckPending: 4096 });
    this.#ackWaitMs = config.ack_wait ? config.ack_wait / 1_000_000 : this.#opts.ackWaitMs;
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
      (err) => this.#opts.log?.(`pipeline: consuming failed, retrying: ${err.message}`, 'warn'),
      stallCheckOf(consumer, (line) => this.#opts.log?.(`pipeline: ${line}`, 'warn')),
    );
    // Buffered messages belong to this process as much as batches do.
    const keepAlive = setInterval(() => queue.forEach((m) => m.working()), this.#ackWaitMs / 3);
    try {
      while (!this.stopping) {
        // Bounded by messages, not batches: below saturation batches are small (whatever came
        // in within the linger) and many wait for the same group commit.
        while (this.#messagesInFlight >= maxInFlight * batchMessages && !this.stopping) await Promise.race(this.#inFlight);
        if (this.#pausedUntil > Date.now()) {
          await sleep(Math.min(1000, this.#pausedUntil - Date.now()));
          continue;
        }
        const batch = await queue.take(batchMessages, lingerMs, () => this.stopping);
        if (batch.length === 0) continue;
        this.counters.fetched += batch.length;
        this.#messagesInFlight += batch.length;
        const p: Promise<void> = this.#process(batch)
          .catch(async (err: unknown) => {
            if (isOutage(err)) {
              // ClickHouse or NATS stayed away through the retries: hand the messages back for
              // later and hold off fetching. Nothing was acked, so nothing is lost.
              this.#opts.log?.(`pipeline: ${errorMessage(err)}; pausing ${PAUSE_ON_OUTAGE_MS / 1000} s, nothing is lost`, 'warn');
              this.counters.batchesHandedBack++;
              for (const m of batch) nakQuietly(m, PAUSE_ON_OUTAGE_MS);
              this.#pausedUntil = Date.now() + PAUSE_ON_OUTAGE_MS;
              return;
            }
            // Bad data never gets here (#process isolates it and dead-letters it): this is
            // NATS or a lookup failing. Nothing was acked; back later, and pause a little.
            this.#opts.log?.(`pipeline: batch of ${batch.length} failed, retrying: ${errorMessage(err)}`, 'warn');
            this.counters.batchesHandedBack++;
            for (const m of batch) nakQuietly(m, this.#opts.retryDelayMs);
            this.#pausedUntil = Date.now() + this.#opts.retryDelayMs;
          })
          .finally(() => {
            this.#inFlight.delete(p);
            this.#messagesInFlight -= batch.length;
          });
        this.#inFlight.add(p);
      }
    } finally {
      clearInterval(keepAlive);
      // Taken from the server but never processed: back at once, for another replica or the next start.
      for (const m of await queue.close()) nakQuietly(m);
    }
    await Promise.allSettled(this.#inFlight);
  }

  async #process(batch: JsMsg[]): Promise<void> {
    const c = this.counters;
    // Keep the messages ours while ClickHouse is slow, instead of letting them be redelivered.
    const keepAlive = setInterval(() => batch.forEach((m) => m.working()), this.#ackWaitMs / 3);
    let owned: number[] = [];
    const claim = {};
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
      for (const seq of owned) this.#seqsInFlight.set(seq, claim);
      // The worker runs beside the stored-seq lookup, on the bet that nothing in the batch is
      // stored yet (true but after a crash or a lost ack): its alerts go out as soon as it is
      // done. When the lookup finds stored rows, the worker runs again on what is left; the
      // alerts it sent twice are dropped by the api (alert ids are stable).
      const all = [...unique.values()];
      // A failed bet is null: #store runs the worker again and meets the failure there.
      const bet = this.#evaluate(all, [], []).then(
        (r) => {
          this.#publishAlerts(r);
          return r;
        },
        () => null,
      );
      // Stored with whatever else is evaluated by then, in one insert per table; on its own
      // (below) when some of it is stored already, its worker failed, or the group's insert did.
      if (await this.#submit(unique, batch, bet)) return;
      const { todo, skipViolations, skipDeadLetters } = await this.#lookUp(unique, batch);
      const early = await bet;
      if (todo.length === 0) return;
      const won = early !== null && todo.length === all.length && skipViolations.length === 0 && skipDeadLetters.length === 0;
      try {
        await this.#store(todo, batch, skipViolations, skipDeadLetters, won ? early : undefined);
      } catch (err) {
        if (isOutage(err)) throw err;
        // A worker threw or died, or ClickHouse refused a row: find the message that did it.
        c.processingFailures++;
        this.#opts.log?.(
          `pipeline: batch of ${todo.length} failed${todo.length > 1 ? ', retrying its messages one by one' : ''}: ${errorMessage(err)}`,
          'warn',
        );
        if (todo.length === 1) await this.#failed(todo[0] as JsMsg, batch, err, claim);
        else for (const m of todo) await this.#isolate(m, batch, claim);
      }
    } finally {
      clearInterval(keepAlive);
      for (const seq of owned) this.#release(seq, claim);
    }
  }

  /**
   * Hands an evaluated batch to the group commit. Resolves true once its rows are stored and its
   * messages acked, false when the batch must be stored on its own; rejects when the stored-seq
   * lookup fails or an outage outlasts the inserts' retries.
   */
  #submit(unique: Map<number, JsMsg>, batch: JsMsg[], bet: Promise<WorkerResult | null>): Promise<boolean> {
    // Every copy of its sequences in the batch is acked with it.
    const copies = batch.filter((m) => unique.has(m.seq));
    return new Promise<boolean>((resolve, reject) => {
      this.#pending.push({ unique, copies, bet, resolve, reject });
      this.#commitNext();
    });
  }

  /**
   * One group commit at a time, of every batch evaluated meanwhile, and at most one per
   * commit interval: alerts leave as soon as a batch's worker is done, while the inserts stay
   * as big as the time one takes or the interval (a part per insert, and the merges behind it,
   * is what costs CPU below saturation). After a quiet spell the first batch commits at once.
   */
  #commitNext(): void {
    if (this.#committing || this.#pending.length === 0 || this.#commitTimer !== null) return;
    const wait = this.#lastCommitAt + this.#opts.commitIntervalMs - performance.now();
    if (wait > 0) {
      this.#commitTimer = setTimeout(() => {
        this.#commitTimer = null;
        this.#commitNext();
      }, wait);
      return;
    }
    this.#lastCommitAt = performance.now();
    const group = this.#pending;
    this.#pending = [];
    this.#committing = true;
    void this.#commit(group).finally(() => {
      this.#committing = false;
      this.#commitNext();
    });
  }

  async #commit(group: Submission[]): Promise<void> {
    let merged: Array<{ s: Submission; r: WorkerResult }>;
    try {
      const [stored, results] = await Promise.all([this.#storedSeqs(group.flatMap((s) => [...s.unique.keys()])), Promise.all(group.map((s) => s.bet))]);
      const storedAny = new Set([...stored.values()].flatMap((set) => [...set]));
      merged = [];
      group.forEach((s, i) => {
        const r = results[i] ?? null;
        if (r !== null && ![...s.unique.keys()].some((seq) => storedAny.has(seq))) merged.push({ s, r });
        else s.resolve(false);
      });
    } catch (err) {
      for (const s of group) s.reject(err);
      return;
    }
    if (merged.length === 0) return;
    try {
      await this.#storeEvaluated(
        merged.flatMap(({ s }) => s.copies),
        merged.map(({ r }) => r),
      );
      for (const { s } of merged) s.resolve(true);
    } catch (err) {
      if (isOutage(err)) {
        for (const { s } of merged) s.reject(err);
        return;
      }
      // A row ClickHouse refused: each batch on its own finds which message holds it.
      this.#opts.log?.(`pipeline: group insert of ${merged.length} batches failed, storing them one by one: ${errorMessage(err)}`, 'warn');
      for (const { s } of merged) s.resolve(false);
    }
  }

  #release(seq: number, claim: object): void {
    // A message nak'ed early may already be back in another batch: leave that batch's claim.
    if (this.#seqsInFlight.get(seq) === claim) this.#seqsInFlight.delete(seq);
  }

  /** Which of `seqs` have rows in each table (one query, timed). Delivery counts cannot be trusted (see #process), so every sequence is looked up. */
  async #storedSeqs(seqs: number[]): Promise<Map<InsertTable, Set<number>>> {
    const started = performance.now();
    try {
      return await this.#opts.sink.storedSeqsIn(['app_usage', 'violations', 'dead_letters'], seqs);
    } finally {
      this.counters.lookupMs += performance.now() - started;
    }
  }

  /** Which messages still need processing, and which of their rows are stored already. */
  async #lookUp(unique: Map<number, JsMsg>, batch: JsMsg[]): Promise<{ todo: JsMsg[]; skipViolations: number[]; skipDeadLetters: number[] }> {
    const stored = await this.#storedSeqs([...unique.keys()]);
    const none = new Set<number>();
    const usage = stored.get('app_usage') ?? none;
    const violations = stored.get('violations') ?? none;
    const dead = stored.get('dead_letters') ?? none;
    // In app_usage means done (it is written last); anything else is processed again,
    // minus the rows already stored.
    const todo = [...unique.values()].filter((m) => !usage.has(m.seq));
    this.counters.redeliveredSkipped += unique.size - todo.length;
    for (const m of batch) if (usage.has(m.seq) && unique.has(m.seq)) m.ack();
    return { todo, skipViolations: [...violations], skipDeadLetters: [...dead] };
  }

  /** One message of a failed batch, alone: stored, or (failing again) retried later or dead-lettered. */
  async #isolate(m: JsMsg, batch: JsMsg[], claim: object): Promise<void> {
    // Looked up again: the failed batch may have stored some of its rows.
    const { todo, skipViolations, skipDeadLetters } = await this.#lookUp(new Map([[m.seq, m]]), batch);
    if (todo.length === 0) return;
    try {
      await this.#store(todo, batch, skipViolations, skipDeadLetters);
    } catch (err) {
      if (isOutage(err)) throw err;
      this.counters.processingFailures++;
      await this.#failed(m, batch, err, claim);
    }
  }

  /**
   * A message whose processing failed on its own. Before its maxDeliver-th delivery it is
   * nak'ed with a growing delay; on it, it goes to the dead letters (`processing_failed`, with
   * the error) and is acked: a poison message never loops. JetStream's delivery count is an
   * upper bound here (nats-server 2.9 can count a duplicate delivery), which errs on the side
   * of giving up one try early, never of looping.
   */
  async #failed(m: JsMsg, batch: JsMsg[], err: unknown, claim: object): Promise<void> {
    const { maxDeliver, retryDelayMs } = this.#opts;
    const deliveries = m.info.deliveryCount;
    const copies = batch.filter((x) => x.seq === m.seq);
    if (deliveries < maxDeliver) {
      const delay = backoffStep(deliveries, retryDelayMs, MAX_RETRY_DELAY_MS);
      this.#opts.log?.(
        `pipeline: message ${m.subject} #${m.seq} failed on delivery ${deliveries} of ${maxDeliver}, again in ${delay} ms: ${errorMessage(err)}`,
      );
      for (const x of copies) x.nak(delay);
      // Back before this batch ends (its other messages are still being retried): not ours now.
      this.#release(m.seq, claim);
      return;
    }
    const summary = summaryOf([
      { index: -1, code: REJECTION.processingFailed, message: `${REJECTION.processingFailed}: ${errorMessage(err)} (delivery ${deliveries} of ${maxDeliver})` },
    ]);
    await publishWithRetry(
      this.#js,
      `dlq.${m.subject}`,
      m.data,
      { msgID: `dlq:${m.seq}:${REJECTION.processingFailed}`, headers: deadLetterHeaders(m.subject, m.seq, summary) },
      this.#retry,
    );
    const body = DEAD_LETTERS.encodeRows([deadLetterRow(USAGE_STREAM, m.subject, m.seq, summary, m.data)]);
    // Its own token: a message may also have rejection rows from an earlier delivery.
    await this.#opts.sink.insert('dead_letters', body, { token: `dead_letters:${REJECTION.processingFailed}:${m.seq}` });
    for (const x of copies) x.ack();
    this.counters.failedMessages++;
    this.counters.deadLetterMessages++;
    this.counters.deadLetters++;
    this.#opts.log?.(`pipeline: message ${m.subject} #${m.seq} dead-lettered after ${deliveries} deliveries: ${errorMessage(err)}`, 'warn');
  }

  /** The worker's result for these messages (a failure is a WorkerTaskError). */
  async #evaluate(todo: readonly JsMsg[], skipViolations: number[], skipDeadLetters: number[]): Promise<WorkerResult> {
    const task: WorkerTask = {
      messages: todo.map((m) => ({ seq: m.seq, subject: m.subject, data: m.data })),
      skipViolations,
      skipDeadLetters,
    };
    // A worker's failure is the data's or the code's, never a broker outage, whatever its message
    // says ("timeout" in a thrown message must not hand the batch back for ever).
    return this.#pool.run(task).catch((err: unknown) => {
      throw new WorkerTaskError(err);
    });
  }

  /**
   * Alerts are the live view: out as soon as decided, not after the rows are stored (the inserts
   * are most of a batch's time). A crash before the rows are stored redelivers the batch and
   * publishes its alerts again; the api drops an alert id it has already sent.
   */
  #publishAlerts(r: WorkerResult): void {
    for (const a of r.alerts) this.#opts.nc.publish(alertsSubject(a.enterpriseId), a.payload);
  }

  /** Runs the worker over `todo` (unless `evaluated` is its result already, alerts sent) and writes what it made; acks `todo` (and copies in `batch`) once stored. */
  async #store(todo: JsMsg[], batch: JsMsg[], skipViolations: number[], skipDeadLetters: number[], evaluated?: WorkerResult): Promise<void> {
    let r = evaluated;
    if (r === undefined) {
      r = await this.#evaluate(todo, skipViolations, skipDeadLetters);
      this.#publishAlerts(r);
    }
    const done = new Set(todo.map((m) => m.seq));
    await this.#storeEvaluated(
      batch.filter((m) => done.has(m.seq)),
      [r],
    );
  }

  /**
   * Writes what the worker made of some batches (`results`, alerts sent), one insert per table
   * for all of them, then acks `messages` (every copy of their sequences).
   */
  async #storeEvaluated(messages: JsMsg[], results: WorkerResult[]): Promise<void> {
    const c = this.counters;
    const sink = this.#opts.sink;
    const token = createHash('sha1')
      .update([...new Set(messages.map((m) => m.seq))].join(','))
      .digest('hex');

    // Order matters for recovery: everything else before app_usage, whose rows mark a
    // message as done (see #process's redelivery check).
    // Publishes carry a msgID, so one retried after a lost ack is stored once.
    for (const r of results) {
      for (const d of r.dlqPayloads) {
        const summary = r.deadLetters.find((x) => x.seq === d.seq)?.summary ?? summaryOf([]);
        await publishWithRetry(
          this.#js,
          `dlq.${d.subject}`,
          d.data,
          { msgID: `dlq:${d.seq}`, headers: deadLetterHeaders(d.subject, d.seq, summary) },
          this.#retry,
        );
      }
    }
    await Promise.all(
      results.flatMap((r) =>
        r.remediations.map(({ request, payload }) =>
          publishWithRetry(
            this.#js,
            remediationSubject(request.enterprise_id, request.tower_id),
            payload,
            { msgID: remediationMsgId(request.alert_id, request.action) },
            this.#retry,
          ),
        ),
      ),
    );
    const started = performance.now();
    // Bodies of several batches are appended: Native takes a stream of blocks, TSV of lines.
    // Row counts given: counting a 10 MB body's line feeds on this thread costs more than it should.
    for (const part of ROW_PARTS) {
      const rows = sum(results, part.rows);
      if (rows === 0) continue;
      // The batches' blocks end to end, never joined into one buffer (a copy of the group).
      const body = results.filter((r) => part.rows(r) > 0).map(part.body);
      await sink.insert(part.table, body, { token: `${part.table}:${token}`, rows, ...(part.format === undefined ? {} : { format: part.format }) });
    }
    c.insertMs += performance.now() - started;

    for (const m of messages) m.ack();

    c.batches++;
    c.messages += new Set(messages.map((m) => m.seq)).size;
    c.stored += sum(results, (r) => r.appUsageRows);
    for (const r of results) {
      c.events += r.counts.events;
      c.violations += r.counts.violations;
      c.unregistered += r.counts.unregistered;
      c.deadLetters += r.counts.rejectedEvents + r.counts.rejectedMessages;
      c.deadLetterMessages += r.dlqPayloads.length;
      c.remediations += r.remediations.length;
      Object.assign(c.policyVersions, r.policyVersions);
      for (const notice of r.notices) this.#opts.log?.(`pipeline: ${notice}`, 'error');
    }
  }
}

/** An evaluated batch waiting for a group commit. */
interface Submission {
  unique: Map<number, JsMsg>;
  /** The messages to ack once stored: every copy of `unique`'s sequences in the batch. */
  copies: JsMsg[];
  bet: Promise<WorkerResult | null>;
  resolve: (storedInGroup: boolean) => void;
  reject: (err: unknown) => void;
}

/**
 * What a worker result holds for each table, in insert order: everything else before
 * app_usage, whose rows mark a message as done (see #process's redelivery check).
 */
const ROW_PARTS: ReadonlyArray<{
  table: 'dead_letters' | 'violations' | 'app_usage';
  body: (r: WorkerResult) => Uint8Array;
  rows: (r: WorkerResult) => number;
  format?: 'Native';
}> = [
  { table: 'dead_letters', body: (r) => r.deadLetterTsv, rows: (r) => r.deadLetterRows },
  { table: 'violations', body: (r) => r.violations, rows: (r) => r.violationRows, format: 'Native' },
  { table: 'app_usage', body: (r) => r.appUsage, rows: (r) => r.appUsageRows, format: 'Native' },
];

function sum<T>(items: readonly T[], of: (item: T) => number): number {
  let n = 0;
  for (const item of items) n += of(item);
  return n;
}

/** A batch's worker task failed (threw, or its thread died). */
export class WorkerTaskError extends Error {
  constructor(cause: unknown) {
    super(cause instanceof Error ? cause.message : String(cause), { cause });
    this.name = 'WorkerTaskError';
  }
}

/** A dependency away for now (its retries spent), not a failure of the data. */
export function isOutage(err: unknown): boolean {
  if (err instanceof WorkerTaskError) return false;
  if (err instanceof ClickHouseSinkError && err.code === SinkErrorCode.RetriesExhausted) return true;
  return err instanceof RetryBudgetExhaustedError || isTransientNatsError(err);
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

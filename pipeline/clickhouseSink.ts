/**
 * The pipeline's row sink: inserts pre-encoded batches (TabSeparated, or Native blocks) into ClickHouse with an
 * explicit column list and an `insert_deduplication_token`, so that a batch retried (by us or
 * after a crash and redelivery) is stored once. Transient failures (network, overload, timeouts)
 * are retried with exponential backoff and jitter; permanent ones (the rows or the schema are
 * wrong) are thrown at once with ClickHouse's message.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ClickHouseError } from '@clickhouse/client';
import {
  bodyBytes,
  bodyParts,
  type ClickHouseHandle,
  type FormattedInsertFormat,
  type InsertBody,
  type InsertTable,
  isInsertTable,
  nativeBlockRows,
  queryStoredSeqsIn,
  ROW_TABLES,
} from '../core/clickhouse/index.js';
import { backoffDelay, backoffStep } from '../core/retry.js';
import { CodedError, type CodeOf } from '../core/codedError.js';

export const DEFAULT_RETRY_INITIAL_DELAY_MS = 100;
export const DEFAULT_RETRY_MAX_DELAY_MS = 5_000;
/** Attempts per insert, the first included. */
export const DEFAULT_RETRY_MAX_ATTEMPTS = 8;

export interface RetryOptions {
  /** Delay before the first retry. @default 100 */
  initialDelayMs?: number;
  /** Ceiling of the doubling delay. @default 5000 */
  maxDelayMs?: number;
  /** Attempts per insert, the first included; 1 disables retries. @default 8 */
  maxAttempts?: number;
  /** Randomise each delay in [delay/2, delay] so that replicas do not retry in step. @default true */
  jitter?: boolean;
}

export interface InsertMetrics {
  table: string;
  rows: number;
  bytes: number;
  /** From the first attempt to success, retries and waits included. */
  latencyMs: number;
  attempts: number;
}

export interface RetryInfo {
  table: string;
  /** The attempt that failed (1-based). */
  attempt: number;
  delayMs: number;
  error: unknown;
}

export interface ClickHouseSinkOptions {
  retry?: RetryOptions;
  /** Called after each stored insert (an exception it throws is ignored). */
  onInsert?: (m: InsertMetrics) => void;
  /** Called before each retry's wait (an exception it throws is ignored). */
  onRetry?: (r: RetryInfo) => void;
  /** Extra settings for every insert (the sink's own win on a conflict). */
  settings?: Readonly<Record<string, string | number | boolean>>;
}

export interface InsertOptions {
  /** Deduplication token: the same token with the same table stores the batch once. */
  token: string;
  /** Columns of the body; default: the table's insert columns (ROW_TABLES, core/clickhouse/rows.ts). */
  columns?: readonly string[];
  /** Rows in the body (for metrics); default: counted from its line feeds (read from its header for Native). */
  rows?: number;
  /** @default 'TabSeparated' */
  format?: FormattedInsertFormat;
  signal?: AbortSignal;
}

/** Running totals; read with {@link ClickHouseSink.stats}. */
export interface SinkStats {
  inserts: number;
  rows: number;
  bytes: number;
  retries: number;
  failures: number;
  /** Sum of insert latencies (ms). */
  insertMs: number;
}

export const SinkErrorCode = {
  /** ClickHouse rejected the rows or the statement; retrying cannot help. */
  Permanent: 'insert_rejected',
  /** Still failing after every attempt. */
  RetriesExhausted: 'insert_retries_exhausted',
  /** The sink was closed, or the insert was aborted. */
  Closed: 'sink_closed',
} as const;
export type SinkErrorCode = CodeOf<typeof SinkErrorCode>;

export class ClickHouseSinkError extends CodedError<SinkErrorCode> {
  readonly table: string;
  readonly attempts: number;
  /** ClickHouse's error code and name (e.g. '27', 'CANNOT_PARSE_INPUT_ASSERTION_FAILED'), when it answered. */
  readonly clickhouseCode: string | undefined;
  readonly clickhouseType: string | undefined;
  constructor(code: SinkErrorCode, table: string, attempts: number, message: string, options?: ErrorOptions) {
    super(code, message, options);
    this.table = table;
    this.attempts = attempts;
    const cause = options?.cause;
    this.clickhouseCode = cause instanceof ClickHouseError ? cause.code : undefined;
    this.clickhouseType = cause instanceof ClickHouseError ? cause.type : undefined;
  }
}

/**
 * ClickHouse error names worth retrying: overload, timeouts, network, replica/keeper trouble.
 * Everything else ClickHouse answers (parse errors, unknown table or column, type mismatch…)
 * means the batch or the schema is wrong, and is permanent.
 */
export const TRANSIENT_CLICKHOUSE_ERRORS: ReadonlySet<string> = new Set([
  'TIMEOUT_EXCEEDED',
  'TOO_MANY_SIMULTANEOUS_QUERIES',
  'TOO_MANY_PARTS',
  'MEMORY_LIMIT_EXCEEDED',
  'NOT_ENOUGH_SPACE',
  'SOCKET_TIMEOUT',
  'NETWORK_ERROR',
  'UNEXPECTED_END_OF_FILE',
  'ABORTED',
  'QUERY_WAS_CANCELLED',
  'TABLE_IS_READ_ONLY',
  'UNKNOWN_STATUS_OF_INSERT',
  'NO_ZOOKEEPER',
  'KEEPER_EXCEPTION',
  'ALL_CONNECTION_TRIES_FAILED',
  'ALL_REPLICAS_ARE_STALE',
  'NO_AVAILABLE_REPLICA',
  'CANNOT_SCHEDULE_TASK',
  'DEADLOCK_AVOIDED',
  'SERVER_OVERLOADED',
]);

/** Node network errors (no answer from the server). */
const TRANSIENT_NODE_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
]);

/** Whether retrying the same insert may succeed. */
export function isTransientInsertError(err: unknown): boolean {
  if (err instanceof ClickHouseError) return err.type !== undefined && TRANSIENT_CLICKHOUSE_ERRORS.has(err.type);
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && TRANSIENT_NODE_CODES.has(code)) return true;
  // clickhouse-js: "Timeout error." on request timeout; Node: "socket hang up".
  return /timeout|socket hang up/i.test(err.message);
}

interface ResolvedRetry {
  initialDelayMs: number;
  maxDelayMs: number;
  maxAttempts: number;
  jitter: boolean;
}

function resolveRetry(o: RetryOptions = {}): ResolvedRetry {
  const r = {
    initialDelayMs: o.initialDelayMs ?? DEFAULT_RETRY_INITIAL_DELAY_MS,
    maxDelayMs: o.maxDelayMs ?? DEFAULT_RETRY_MAX_DELAY_MS,
    maxAttempts: o.maxAttempts ?? DEFAULT_RETRY_MAX_ATTEMPTS,
    jitter: o.jitter ?? true,
  };
  if (!(Number.isFinite(r.initialDelayMs) && r.initialDelayMs >= 0)) throw new RangeError('retry.initialDelayMs must be a number ≥ 0');
  if (!(Number.isFinite(r.maxDelayMs) && r.maxDelayMs >= r.initialDelayMs)) {
    throw new RangeError('retry.maxDelayMs must be a number ≥ retry.initialDelayMs');
  }
  if (!(Number.isInteger(r.maxAttempts) && r.maxAttempts >= 1)) throw new RangeError('retry.maxAttempts must be an integer ≥ 1');
  return r;
}

/** Settings every sink insert carries (scoped to the statement). */
const INSERT_SETTINGS = {
  // Synchronous inserts: the batch is in a part (and deduplicated by its token) when the call
  // returns, so acking JetStream afterwards is safe. Newer servers default async_insert to 1,
  // and async inserts ignore the token unless async_insert_deduplicate is on.
  async_insert: 0,
  insert_deduplicate: 1,
  // The encoder writes DateTime64 as '<seconds>.<mmm>'; 'basic' reads that exactly for any
  // value, while 'best_effort' (chdb's default) takes short numbers for dates.
  date_time_input_format: 'basic',
} as const;

function countLines(body: Uint8Array): number {
  let n = 0;
  let i = body.indexOf(10);
  while (i !== -1) {
    n++;
    i = body.indexOf(10, i + 1);
  }
  return n;
}

/**
 * Where rows go: the pipeline, discovery and remediation workers write through this
 * ({@link ClickHouseSink} implements it), so every runtime insert has a token and retries.
 */
export interface RowSink {
  insert(table: InsertTable, body: InsertBody, options: InsertOptions): Promise<void>;
  /** @param stream JetStream stream of the sequences (dead_letters holds several). @default 'USAGE' */
  storedSeqs(table: InsertTable, seqs: readonly number[], stream?: string): Promise<Set<number>>;
  /** {@link storedSeqs} of several tables in one query. */
  storedSeqsIn(tables: readonly InsertTable[], seqs: readonly number[], stream?: string): Promise<Map<InsertTable, Set<number>>>;
}

/**
 * Writes batches to ClickHouse through a {@link ClickHouseHandle} it does not own (closing
 * the sink leaves the handle open).
 */
export class ClickHouseSink implements RowSink {
  readonly #handle: ClickHouseHandle;
  readonly #retry: ResolvedRetry;
  readonly #onInsert: ((m: InsertMetrics) => void) | undefined;
  readonly #onRetry: ((r: RetryInfo) => void) | undefined;
  readonly #settings: Readonly<Record<string, string | number | boolean>>;
  readonly #stats: SinkStats = { inserts: 0, rows: 0, bytes: 0, retries: 0, failures: 0, insertMs: 0 };
  readonly #inFlight = new Set<Promise<unknown>>();
  /** Aborted on close: cuts backoff waits short. */
  readonly #closing = new AbortController();
  #closed: Promise<void> | undefined;

  constructor(handle: ClickHouseHandle, options: ClickHouseSinkOptions = {}) {
    this.#handle = handle;
    this.#retry = resolveRetry(options.retry);
    this.#onInsert = options.onInsert;
    this.#onRetry = options.onRetry;
    this.#settings = { ...options.settings, ...INSERT_SETTINGS };
  }

  /** A copy of the running totals. */
  stats(): SinkStats {
    return { ...this.#stats };
  }

  /**
   * Inserts a batch (`INSERT INTO table (columns) SETTINGS insert_deduplication_token = … FORMAT …`).
   * Resolves once ClickHouse has the rows (or had them already under the same token); the
   * figures go to `onInsert` and {@link stats}.
   * @throws {ClickHouseSinkError} `insert_rejected` at once for a permanent error,
   *   `insert_retries_exhausted` after the last attempt, `sink_closed` after close().
   */
  async insert(table: InsertTable | (string & {}), body: InsertBody, options: InsertOptions): Promise<void> {
    if (this.#closed !== undefined) throw new ClickHouseSinkError(SinkErrorCode.Closed, table, 0, 'the ClickHouse sink is closed');
    const columns = options.columns ?? (isInsertTable(table) ? ROW_TABLES[table].columns : undefined);
    if (columns === undefined) throw new TypeError(`columns are required for table ${table}`);
    if (options.token === '') throw new TypeError('token must be a non-empty string');
    const p = this.#insert(table, body, columns, options);
    this.#inFlight.add(p);
    try {
      await p;
    } finally {
      this.#inFlight.delete(p);
    }
  }

  async #insert(table: string, body: InsertBody, columns: readonly string[], options: InsertOptions): Promise<InsertMetrics> {
    const countRows = options.format === 'Native' ? nativeBlockRows : countLines;
    const rows = options.rows ?? bodyParts(body).reduce((n, part) => n + countRows(part), 0);
    const bytes = bodyBytes(body);
    const started = performance.now();
    const settings = { ...this.#settings, insert_deduplication_token: options.token };
    // close() cuts a backoff wait short but lets a running attempt finish.
    const waitSignal = options.signal === undefined ? this.#closing.signal : AbortSignal.any([options.signal, this.#closing.signal]);
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#handle.insertFormatted({
          table,
          columns,
          format: options.format ?? 'TabSeparated',
          body,
          settings,
          ...(options.signal === undefined ? {} : { abortSignal: options.signal }),
        });
        const m: InsertMetrics = { table, rows, bytes, latencyMs: performance.now() - started, attempts: attempt };
        this.#stats.inserts++;
        this.#stats.rows += rows;
        this.#stats.bytes += bytes;
        this.#stats.insertMs += m.latencyMs;
        callHook(this.#onInsert, m);
        return m;
      } catch (err) {
        if (options.signal?.aborted === true) {
          this.#stats.failures++;
          throw new ClickHouseSinkError(SinkErrorCode.Closed, table, attempt, `insert into ${table} aborted`, { cause: err });
        }
        if (!isTransientInsertError(err)) {
          this.#stats.failures++;
          throw new ClickHouseSinkError(
            SinkErrorCode.Permanent,
            table,
            attempt,
            `ClickHouse rejected the insert into ${table} (${rows} rows): ${describe(err)}`,
            { cause: err },
          );
        }
        if (attempt >= this.#retry.maxAttempts) {
          this.#stats.failures++;
          throw new ClickHouseSinkError(
            SinkErrorCode.RetriesExhausted,
            table,
            attempt,
            `insert into ${table} failed ${attempt} times; last error: ${describe(err)}`,
            { cause: err },
          );
        }
        const { initialDelayMs, maxDelayMs, jitter } = this.#retry;
        const wait = jitter ? backoffDelay(attempt, initialDelayMs, maxDelayMs) : backoffStep(attempt, initialDelayMs, maxDelayMs);
        this.#stats.retries++;
        callHook(this.#onRetry, { table, attempt, delayMs: wait, error: err });
        try {
          await sleep(wait, undefined, { signal: waitSignal });
        } catch {
          this.#stats.failures++;
          throw new ClickHouseSinkError(
            SinkErrorCode.Closed,
            table,
            attempt,
            `insert into ${table} given up: ${this.#closing.signal.aborted ? 'the sink was closed' : 'aborted'} while waiting to retry after: ${describe(err)}`,
            { cause: err },
          );
        }
      }
    }
  }

  /**
   * Which of `seqs` (JetStream sequences of `stream`) already have rows in `table`: for a
   * redelivered message whose rows were stored before a crash but never acked.
   */
  async storedSeqs(table: InsertTable | (string & {}), seqs: readonly number[], stream?: string): Promise<Set<number>> {
    const stored = await this.storedSeqsIn([table as InsertTable], seqs, stream);
    return stored.get(table as InsertTable) ?? new Set();
  }

  storedSeqsIn(tables: readonly InsertTable[], seqs: readonly number[], stream?: string): Promise<Map<InsertTable, Set<number>>> {
    const unknown = tables.find((t) => !isInsertTable(t));
    if (unknown !== undefined) return Promise.reject(new TypeError(`storedSeqs: unknown table ${unknown}`));
    return queryStoredSeqsIn(this.#handle, tables, seqs, stream);
  }

  /** Stops accepting inserts, cuts retry waits short and waits for in-flight inserts. Idempotent. */
  close(): Promise<void> {
    return (this.#closed ??= (async () => {
      this.#closing.abort();
      await Promise.allSettled([...this.#inFlight]);
    })());
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Metrics hooks must not turn a stored batch into a failed insert: their errors are dropped. */
function callHook<T>(hook: ((arg: T) => void) | undefined, arg: T): void {
  if (hook === undefined) return;
  try {
    hook(arg);
  } catch {
    // ignored on purpose (see above)
  }
}

function describe(err: unknown): string {
  if (err instanceof ClickHouseError) {
    // The engine's message can run to pages (it quotes the row); the first lines say it.
    const lines = err.message.split('\n').filter((l) => l.trim() !== '');
    const text = lines.slice(0, 8).join('\n');
    return `${text}${err.type ? ` (${err.type}, code ${err.code})` : ''}`;
  }
  return err instanceof Error ? err.message : String(err);
}

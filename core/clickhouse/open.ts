/**
 * Opens ClickHouse: the embedded engine (chdb) in `<dataDir>/clickhouse` when no server URL is
 * configured, else a server over HTTP. Either way the caller gets the same
 * `@clickhouse/client` client; this file is the only one that knows chdb exists.
 *
 * Embedded-engine facts this file works around (chdb 3.4.0 with @clickhouse/client 1.23.1):
 * - libchdb binds ONE data directory per process. A second connection to the same directory in
 *   the same process is fine (they share the engine); a different directory is refused until
 *   every connection to the first is closed. A second PROCESS on the same directory fails to
 *   lock `<dir>/status` (ClickHouse's own lock file, which names the holder's PID).
 * - chdb's connection applies `clickhouse_settings` as `SET k = v; <query>` on a session that
 *   lives as long as the connection, so a setting passed to one call stays in force for every
 *   later call: an `insert_deduplication_token` given once would silently deduplicate (drop)
 *   every later insert. {@link SettingsScopedConnection} resets such settings to their defaults.
 * - chdb ignores the client's `database` option; `USE <database>` sets the session's default.
 * - `client.insert` on chdb turns the body into a JS string before handing it to the engine;
 *   chdb's raw insert takes a Buffer zero-copy and scopes settings to the statement, so
 *   {@link ClickHouseHandle.insertFormatted} uses it for small bodies (about twice as fast for
 *   TSV). A body given inline is parsed by one thread, though: from {@link INFILE_MIN_BYTES} up
 *   it goes through a spool file and `INSERT … FROM INFILE`, which the engine parses in
 *   parallel (twice as fast again; spool.ts). chdb's raw insert refuses binary formats, so a
 *   Native body (the pipeline's, native.ts) always goes through a spool file.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { ClickHouseError, ClickHouseLogLevel, createClient, parseError, type ClickHouseClient, type ClickHouseClientConfigOptions } from '@clickhouse/client';
import type * as ChdbConnection from 'chdb/connection';
import { CodedError, type CodeOf } from '../codedError.js';
import { processAlive } from '../processes.js';
import { OneAtATime } from './oneAtATime.js';
import { InsertSpool } from './spool.js';
import { isDataTable, tableOf } from './tables.js';
import { CLUSTER_NAME } from '../config.js';

/** Database created and used when none is given. */
export const DEFAULT_DATABASE = 'towerwatch';
/** Subdirectory of `dataDir` holding the embedded engine's files. */
export const EMBEDDED_SUBDIR = 'clickhouse';
/** HTTP request timeout for a server. @default 30000 */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

export const ClickHouseErrorCode = {
  /** Another process holds the embedded data directory. */
  DataDirLocked: 'data_dir_locked',
  /** This process already has a different embedded data directory open. */
  DataDirConflict: 'data_dir_conflict',
  /** The server did not answer (connection refused, DNS, timeout). */
  Unreachable: 'unreachable',
  /** The server answered with an error while opening (e.g. authentication). */
  OpenFailed: 'open_failed',
  /** Invalid options (bad database name, bad URL). */
  InvalidOptions: 'invalid_options',
  /** The handle was closed. */
  Closed: 'closed',
} as const;
export type ClickHouseErrorCode = CodeOf<typeof ClickHouseErrorCode>;

/** Failure to open or use a {@link ClickHouseHandle}; server errors stay `ClickHouseError`s. */
export class ClickHouseOpenError extends CodedError<ClickHouseErrorCode> {}

export interface ClickHouseOptions {
  /** Server URL (credentials and `?clickhouse_setting=` in it are honoured); `null`: embedded. */
  clickhouseUrl: string | null;
  /** Local state directory; the embedded engine lives in `<dataDir>/clickhouse`. */
  dataDir: string;
  /** Database to create and use. @default 'towerwatch' (or the URL's path, when it has one) */
  database?: string;
  /** HTTP request timeout (server only). @default 30000 */
  requestTimeoutMs?: number;
  /**
   * Cluster the schema spans (server only): data tables are written and read through their
   * Distributed `*_all` tables, and migrations run ON CLUSTER. @default null
   */
  cluster?: string | null;
}

/** Raw formats {@link ClickHouseHandle.insertFormatted} accepts: text with rows one per line, or one Native block (native.ts). */
export type FormattedInsertFormat = 'TabSeparated' | 'JSONEachRow' | 'JSONCompactEachRow' | 'CSV' | 'Native';

/**
 * Encoded rows: one buffer, or parts sent end to end (Native blocks one after the other, or
 * text rows), so a caller holding several never copies them into one.
 */
export type InsertBody = Uint8Array | readonly Uint8Array[];

/** The parts of a body, in order. */
export function bodyParts(body: InsertBody): readonly Uint8Array[] {
  return body instanceof Uint8Array ? [body] : body;
}

/** A body's size in bytes. */
export function bodyBytes(body: InsertBody): number {
  let n = 0;
  for (const part of bodyParts(body)) n += part.byteLength;
  return n;
}

export interface FormattedInsert {
  /** Table name, unqualified (in the handle's database) or `db.table`. */
  table: string;
  /** Columns in the order the body has them; other columns take their defaults. */
  columns: readonly string[];
  format: FormattedInsertFormat;
  /** The encoded rows. */
  body: InsertBody;
  /** Settings for this statement only (on both backends). */
  settings?: Readonly<Record<string, string | number | boolean>>;
  abortSignal?: AbortSignal;
}

export interface FormattedInsertResult {
  /** Rows written as reported by the engine (includes materialized-view writes), when known. */
  writtenRows: number | undefined;
}

export interface ClickHouseHandle extends AsyncDisposable {
  /** The one client: `query`, `command`, `exec`, `insert` against either backend. */
  readonly client: ClickHouseClient;
  /** The database created at open and set as the client's default. Qualify names with it. */
  readonly database: string;
  /** True for the in-process engine (one process owns its directory). */
  readonly embedded: boolean;
  /** The embedded directory, or the server URL without its password. */
  readonly location: string;
  /** The cluster the schema spans, or null (one server, or embedded). Name data tables with `tableOf`. */
  readonly cluster: string | null;
  /**
   * Inserts pre-encoded rows (`INSERT INTO table (columns) SETTINGS … FORMAT format`), with
   * `settings` scoped to this statement. Server errors are thrown as `ClickHouseError`
   * (with `code` and `type`) on both backends. On a cluster an unqualified data table means its
   * `*_all`, written in the foreground: the insert returns once every shard has its rows, so
   * an acknowledged batch is stored (and a retried one deduplicated on its shard by its token).
   */
  insertFormatted(insert: FormattedInsert): Promise<FormattedInsertResult>;
  /** Closes the client (and the embedded engine's connections). Idempotent. */
  close(): Promise<void>;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;
const QUALIFIED_NAME = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$/;

/**
 * Opens ClickHouse and creates the database if it is missing.
 * @throws {ClickHouseOpenError} `data_dir_locked` when another process owns the embedded
 *   directory, `data_dir_conflict` when this process has another one open, `unreachable` when
 *   the server does not answer, `open_failed` when it refuses (the server's message included).
 */
export async function openClickHouse(options: ClickHouseOptions): Promise<ClickHouseHandle> {
  if (options.requestTimeoutMs !== undefined && !(Number.isInteger(options.requestTimeoutMs) && options.requestTimeoutMs > 0)) {
    throw new ClickHouseOpenError(ClickHouseErrorCode.InvalidOptions, 'requestTimeoutMs must be a positive integer');
  }
  const cluster = options.cluster ?? null;
  if (cluster !== null && !CLUSTER_NAME.test(cluster)) {
    throw new ClickHouseOpenError(ClickHouseErrorCode.InvalidOptions, `cluster must be letters, digits, _ and -, got '${cluster}'`);
  }
  if (cluster !== null && options.clickhouseUrl === null) {
    throw new ClickHouseOpenError(ClickHouseErrorCode.InvalidOptions, 'a cluster needs a server URL (CLICKHOUSE_URL); the embedded engine is one node');
  }
  return options.clickhouseUrl === null
    ? openEmbedded(options.dataDir, checkDatabase(options.database ?? DEFAULT_DATABASE))
    : openServer(options.clickhouseUrl, options.database, options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS, cluster);
}

function checkDatabase(name: string): string {
  if (!IDENTIFIER.test(name)) {
    throw new ClickHouseOpenError(ClickHouseErrorCode.InvalidOptions, `database must be an identifier ([A-Za-z_][A-Za-z0-9_]*), got '${name}'`);
  }
  return name;
}

function qualify(database: string, table: string): string {
  if (!QUALIFIED_NAME.test(table)) {
    throw new ClickHouseOpenError(ClickHouseErrorCode.InvalidOptions, `table must be a name or db.name, got '${table}'`);
  }
  return table.includes('.') ? table : `${database}.${table}`;
}

function checkColumns(columns: readonly string[]): void {
  if (columns.length === 0 || !columns.every((c) => IDENTIFIER.test(c))) {
    throw new ClickHouseOpenError(ClickHouseErrorCode.InvalidOptions, `columns must be a non-empty list of identifiers, got [${columns.join(', ')}]`);
  }
}

/**
 * One error class on both backends: engine errors ("Code: N. DB::Exception: … (TYPE)") and
 * chdb's own ClickHouseError (a second copy of the class, from @clickhouse/client-common, so
 * `instanceof` fails against @clickhouse/client's) become @clickhouse/client's ClickHouseError.
 */
/** The first column of the first row of `query`, as a number (NaN when there is no row). */
export async function queryNumber(ch: Pick<ClickHouseHandle, 'client'>, query: string): Promise<number> {
  const rs = await ch.client.query({ query, format: 'JSONCompactEachRow' });
  const rows = await rs.json<[string | number]>();
  return Number(rows[0]?.[0] ?? Number.NaN);
}

export function toClickHouseError(err: unknown): unknown {
  if (!(err instanceof Error) || err instanceof ClickHouseError) return err;
  const { code, type } = err as { code?: unknown; type?: unknown };
  if (err.constructor.name === 'ClickHouseError' && typeof code === 'string') {
    const same = new ClickHouseError({ message: err.message, code, type: typeof type === 'string' ? type : undefined });
    (same as Error).cause = err;
    return same;
  }
  const parsed = parseError(err.message);
  if (parsed !== err && parsed instanceof ClickHouseError) {
    (parsed as Error).cause = err;
    return parsed;
  }
  return err;
}

// ---------------------------------------------------------------------------------------------
// Server over HTTP

async function openServer(rawUrl: string, database: string | undefined, requestTimeoutMs: number, cluster: string | null): Promise<ClickHouseHandle> {
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch (err) {
    throw new ClickHouseOpenError(ClickHouseErrorCode.InvalidOptions, `CLICKHOUSE_URL is not a URL`, { cause: err });
  }
  // The URL's path names a database in clickhouse-js; we pass it explicitly instead, because
  // the database must exist before a client can use it as its default.
  const fromPath = url.pathname.length > 1 ? decodeURIComponent(url.pathname.slice(1)) : undefined;
  const db = checkDatabase(database ?? fromPath ?? DEFAULT_DATABASE);
  url.pathname = '/';
  const redacted = redactUrl(url);
  const base: ClickHouseClientConfigOptions = {
    url: url.toString(),
    request_timeout: requestTimeoutMs,
    application: 'towerwatch',
  };

  // Quiet: a failure here becomes one ClickHouseOpenError rather than a logged warning too.
  const bootstrap = createClient({ ...base, database: 'default', log: { level: ClickHouseLogLevel.OFF } });
  try {
    // SELECT (not /ping): it checks the credentials too.
    const ping = await bootstrap.ping({ select: true });
    if (!ping.success) throw classifyServerError(ping.error, redacted);
    await bootstrap.command({ query: `CREATE DATABASE IF NOT EXISTS ${db}` }).catch((err: unknown) => {
      throw classifyServerError(err, redacted);
    });
  } finally {
    await bootstrap.close();
  }

  const client = createClient({ ...base, database: db });
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => (closing ??= client.close());
  const scope = { database: db, cluster };
  return {
    client,
    database: db,
    embedded: false,
    location: redacted,
    cluster,
    async insertFormatted(insert) {
      if (closing !== undefined) throw closedError();
      checkColumns(insert.columns);
      const distributed = cluster !== null && isDataTable(insert.table) ? tableOf(scope, insert.table) : null;
      const table = distributed ?? qualify(db, insert.table);
      const settings = distributed === null ? insert.settings : { ...insert.settings, distributed_foreground_insert: 1 };
      // The body is sent as it is, as the request body of the statement: @clickhouse/client's
      // insert() takes a raw stream for text formats only (a JSON one must be a stream of
      // objects, Native is refused), and the bodies here are encoded already.
      const result = await client.exec({
        query: `INSERT INTO ${table} (${insert.columns.join(', ')}) FORMAT ${insert.format}`,
        values: Readable.from(bodyParts(insert.body), { objectMode: false }),
        ...(settings === undefined ? {} : { clickhouse_settings: { ...settings } }),
        ...(insert.abortSignal === undefined ? {} : { abort_signal: insert.abortSignal }),
      });
      // An insert answers with an empty body; reading it to the end frees the socket.
      await finished(result.stream.resume());
      const written = result.summary?.written_rows;
      return { writtenRows: written === undefined ? undefined : Number(written) };
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

function redactUrl(url: URL): string {
  const copy = new URL(url.toString());
  if (copy.password !== '') copy.password = '***';
  return copy.toString();
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'UND_ERR_SOCKET']);

function classifyServerError(err: unknown, where: string): ClickHouseOpenError {
  if (err instanceof ClickHouseError) {
    return new ClickHouseOpenError(
      ClickHouseErrorCode.OpenFailed,
      `ClickHouse at ${where} refused to open: ${err.message}${err.type ? ` (${err.type})` : ''}`,
      { cause: err },
    );
  }
  const code = (err as { code?: unknown } | null)?.code;
  const detail = err instanceof Error ? err.message || String(code ?? err.name) : String(err);
  const network = typeof code === 'string' && NETWORK_CODES.has(code);
  const timeout = /timeout/i.test(detail);
  return new ClickHouseOpenError(
    network || timeout ? ClickHouseErrorCode.Unreachable : ClickHouseErrorCode.OpenFailed,
    `ClickHouse at ${where} is unreachable: ${detail}${typeof code === 'string' && !detail.includes(code) ? ` (${code})` : ''}. ` +
      'Check CLICKHOUSE_URL, or unset it to use the embedded engine.',
    { cause: err },
  );
}

function closedError(): ClickHouseOpenError {
  return new ClickHouseOpenError(ClickHouseErrorCode.Closed, 'the ClickHouse handle is closed');
}

// ---------------------------------------------------------------------------------------------
// Embedded engine (chdb)

type Connection = NonNullable<ClickHouseClientConfigOptions['connection']>;
type ChdbModule = typeof ChdbConnection;
type ChdbConnection = ReturnType<ChdbModule['createChdbConnection']>;

async function openEmbedded(dataDir: string, db: string): Promise<ClickHouseHandle> {
  const dir = resolve(dataDir, EMBEDDED_SUBDIR);
  mkdirSync(dir, { recursive: true });
  // Loaded only here: a server deployment never loads the native engine.
  const { createChdbConnection }: ChdbModule = await import('chdb/connection');
  const open = (): ChdbConnection => {
    try {
      return createChdbConnection({ path: dir });
    } catch (err) {
      throw classifyChdbOpenError(err, dir);
    }
  };
  const queryConnection = open();
  let insertConnection: ChdbConnection;
  try {
    // Inserts get a connection of their own: it shares the engine, but its session never sees
    // the SETs of the client's calls, and inserts do not queue behind dashboard queries.
    insertConnection = open();
  } catch (err) {
    await queryConnection.close();
    throw err;
  }

  const scoped = new SettingsScopedConnection(queryConnection, new OneAtATime());
  const insertTurns = new OneAtATime();
  const client = createClient({ connection: scoped, application: 'towerwatch' });
  try {
    await client.command({ query: `CREATE DATABASE IF NOT EXISTS ${db}` });
    await client.command({ query: `USE ${db}` });
  } catch (err) {
    await client.close();
    await insertConnection.close();
    throw err;
  }

  const spool = new InsertSpool();
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      try {
        await client.close();
      } finally {
        await insertConnection.close();
        await spool.close();
      }
    })());
  return {
    client,
    database: db,
    embedded: true,
    cluster: null,
    location: dir,
    async insertFormatted(insert) {
      if (closing !== undefined) throw closedError();
      checkColumns(insert.columns);
      const table = qualify(db, insert.table);
      try {
        const format = insert.format;
        const inline = async (): Promise<FormattedInsertResult> => {
          if (format === 'Native') throw new TypeError('a Native body cannot be inserted inline');
          const result = await insertTurns.run(() =>
            insertConnection.chdb.rawInsert({
              table,
              columns: [...insert.columns],
              // Small text bodies only (below INFILE_MIN_BYTES): joining their parts costs little.
              values: insert.body instanceof Uint8Array ? insert.body : Buffer.concat(insert.body),
              format,
              ...(insert.settings === undefined ? {} : { settings: { ...insert.settings } }),
              ...(insert.abortSignal === undefined ? {} : { signal: insert.abortSignal }),
            }),
          );
          return { writtenRows: result.rowsWritten };
        };
        // chdb's raw insert refuses binary formats: a Native body always goes through a file.
        const native = format === 'Native';
        if (!native && bodyBytes(insert.body) < INFILE_MIN_BYTES) return await inline();
        const settings = settingsClause(insert.settings);
        return await spool.with(insert.body, async (path) => {
          if (path === null && native) {
            // Retried as an outage (nothing acked, nothing lost) until there is room again.
            throw new ClickHouseError({ message: `no room for the insert's spool file in ${spool.dir}`, code: '243', type: 'NOT_ENOUGH_SPACE' });
          }
          if (path === null) return inline();
          // The file is written before the turn: the next insert's write overlaps this one's insert.
          await insertTurns.run(() =>
            insertConnection.chdb.queryAsync(
              `INSERT INTO ${table} (${insert.columns.join(', ')}) FROM INFILE ${sqlString(path)}${settings} FORMAT ${insert.format}`,
              { format: 'TabSeparated', ...(insert.abortSignal === undefined ? {} : { signal: insert.abortSignal }) },
            ),
          );
          // The engine does not report the count of a query's writes.
          return { writtenRows: undefined };
        });
      } catch (err) {
        throw toClickHouseError(err);
      }
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

/**
 * Bodies from this size are inserted from a spool file (spool.ts): below it the file costs more
 * than the parallel parser saves (1k rows: 16 ms inline, 30 ms from a file; 10k rows: 88 ms
 * inline, 62 ms from a file).
 */
export const INFILE_MIN_BYTES = 1 << 20;

/** A single-quoted SQL string literal: only `\` and `'` can end one early. */
function sqlString(value: string): string {
  return `'${value.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
}

/** ` SETTINGS k = v, …` for a statement (names checked, values as literals), or ''. */
function settingsClause(settings: FormattedInsert['settings']): string {
  const entries = Object.entries(settings ?? {});
  if (entries.length === 0) return '';
  const parts = entries.map(([k, v]) => {
    if (!IDENTIFIER.test(k)) throw new ClickHouseOpenError(ClickHouseErrorCode.InvalidOptions, `setting names are identifiers, got '${k}'`);
    if (typeof v === 'boolean') return `${k} = ${v ? 1 : 0}`;
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) throw new ClickHouseOpenError(ClickHouseErrorCode.InvalidOptions, `setting ${k} must be a finite number`);
      return `${k} = ${v}`;
    }
    return `${k} = ${sqlString(v)}`;
  });
  return ` SETTINGS ${parts.join(', ')}`;
}

function classifyChdbOpenError(err: unknown, dir: string): ClickHouseOpenError {
  const message = err instanceof Error ? err.message : String(err);
  const other = /only one active data directory per process.*path='([^']*)'/.exec(message);
  if (other !== null) {
    return new ClickHouseOpenError(
      ClickHouseErrorCode.DataDirConflict,
      `cannot open embedded ClickHouse at ${dir}: this process already has ${other[1] ?? 'another directory'} open, ` +
        'and the embedded engine binds one data directory per process. Close that handle first.',
      { cause: err },
    );
  }
  const holder = readStatusFile(dir);
  if (holder !== undefined && holder.pid !== process.pid && processAlive(holder.pid)) {
    return new ClickHouseOpenError(
      ClickHouseErrorCode.DataDirLocked,
      `embedded ClickHouse data directory ${dir} is in use by process ${holder.pid}` +
        `${holder.started ? ` (started ${holder.started})` : ''}. One process owns an embedded data directory: ` +
        'stop that process, ask it through the api or NATS, or set CLICKHOUSE_URL to share a ClickHouse server.',
      { cause: err },
    );
  }
  return new ClickHouseOpenError(ClickHouseErrorCode.OpenFailed, `cannot open embedded ClickHouse at ${dir}: ${message}`, { cause: err });
}

/** ClickHouse's lock file: "PID: 123\nStarted at: 2026-01-01 00:00:00\nRevision: …". */
function readStatusFile(dir: string): { pid: number; started: string | undefined } | undefined {
  const file = join(dir, 'status');
  if (!existsSync(file)) return undefined;
  try {
    const text = readFileSync(file, 'utf8');
    const pid = /^PID:\s*(\d+)/m.exec(text)?.[1];
    if (pid === undefined) return undefined;
    return { pid: Number(pid), started: /^Started at:\s*(.+)$/m.exec(text)?.[1]?.trim() };
  } catch {
    return undefined;
  }
}

type QueryParams = Parameters<Connection['query']>[0];

function rethrow(err: unknown): never {
  throw toClickHouseError(err);
}

/**
 * Delegates to chdb's connection but keeps `clickhouse_settings` scoped to the call that passed
 * them, as they are over HTTP: every engine setting an earlier call SET and this call does not
 * pass is prefixed as `SET name = DEFAULT`. (chdb runs one statement batch at a time per
 * connection, so the prefix and the statement are not interleaved with other calls.) Errors
 * come out as @clickhouse/client's ClickHouseError, as over HTTP.
 */
class SettingsScopedConnection implements Connection {
  readonly #inner: Connection;
  readonly #chdb: ChdbConnection['chdb'];
  /** Engine settings some call has SET on the session. */
  readonly #dirty = new Set<string>();
  /** Setting name → whether the engine knows it (HTTP-only ones are dropped by chdb). */
  readonly #known = new Map<string, boolean>();
  readonly #turns: OneAtATime;

  constructor(inner: ChdbConnection, turns: OneAtATime) {
    this.#turns = turns;
    // chdb 3.4.0 types its connection against @clickhouse/client-common 1.23.0, whose
    // ClickHouseSettings type differs from the copy inside @clickhouse/client 1.23.1; the
    // runtime contract is the same (chdb's own docs pass it to createClient as is).
    this.#inner = inner as unknown as Connection;
    this.#chdb = inner.chdb;
  }

  async #scope<P extends QueryParams>(params: P): Promise<P> {
    const given = Object.entries(params.clickhouse_settings ?? {})
      .filter(([, v]) => v !== undefined)
      .map(([k]) => k);
    const unknown = given.filter((k) => !this.#known.has(k));
    if (unknown.length > 0) await this.#learn(unknown);
    const resets = [...this.#dirty].filter((k) => !given.includes(k));
    for (const k of given) if (this.#known.get(k) === true) this.#dirty.add(k);
    if (resets.length === 0) return params;
    return { ...params, query: `SET ${resets.map((k) => `${k} = DEFAULT`).join(', ')}; ${params.query}` };
  }

  async #learn(names: string[]): Promise<void> {
    const safe = names.filter((n) => IDENTIFIER.test(n));
    for (const n of names) this.#known.set(n, false);
    if (safe.length === 0) return;
    const list = safe.map((n) => `'${n}'`).join(', ');
    const result = await this.#chdb.queryAsync(`SELECT name FROM system.settings WHERE name IN (${list})`, {
      format: 'TabSeparated',
    });
    for (const line of result.text().split('\n')) if (line !== '') this.#known.set(line, true);
  }

  async ping(params: Parameters<Connection['ping']>[0]): ReturnType<Connection['ping']> {
    const result = await this.#turns.run(() => this.#inner.ping(params));
    return result.success ? result : { success: false, error: toClickHouseError(result.error) as Error };
  }
  async query(params: QueryParams): ReturnType<Connection['query']> {
    return this.#turns.run(async () => this.#inner.query(await this.#scope(params))).catch(rethrow);
  }
  async insert(params: Parameters<Connection['insert']>[0]): ReturnType<Connection['insert']> {
    return this.#turns.run(async () => this.#inner.insert(await this.#scope(params))).catch(rethrow);
  }
  async command(params: Parameters<Connection['command']>[0]): ReturnType<Connection['command']> {
    return this.#turns.run(async () => this.#inner.command(await this.#scope(params))).catch(rethrow);
  }
  async exec(params: Parameters<Connection['exec']>[0]): ReturnType<Connection['exec']> {
    return this.#turns.run(async () => this.#inner.exec(await this.#scope(params))).catch(rethrow);
  }
  async close(): Promise<void> {
    return this.#inner.close();
  }
}

/**
 * Test fixture: ClickHouse's HTTP interface served from one embedded engine (chdb) in the test
 * process. The engine is real; the protocol is a stand-in that understands what
 * @clickhouse/client sends (statement in the body or in `query`, data in the body, settings and
 * `param_*` in the URL, errors as `Code: N. DB::Exception: … (TYPE)`). It is not a ClickHouse
 * server, is never shipped as one, and exists so that the `CLICKHOUSE_URL` path (every insert
 * and every query over HTTP) runs in tests on a machine without a server.
 *
 * ```ts
 * const standIn = await startClickHouseStandIn({ dataDir });
 * const ch = await openClickHouse({ clickhouseUrl: standIn.url, dataDir }); // the server path
 * ```
 *
 * With `cluster`, the engine is a one-shard cluster of that name whose only replica is itself
 * (`remote_servers` in a config file; `is_local`, so nothing listens), and the schema is in place
 * as the cluster migrations leave it (the tables, then a Distributed `*_all` over each), minus
 * replication: ON CLUSTER and Replicated engines need Keeper, which this machine does not have.
 * A handle opened with `cluster` then writes and reads through `*_all`, and its `migrate` finds
 * the schema current and sends no DDL.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { ClickHouseError } from '@clickhouse/client';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Session } from 'chdb';
import { type ClickHouseHandle, DEFAULT_DATABASE, EMBEDDED_SUBDIR, type FormattedInsertFormat, migrate, openClickHouse } from '../clickhouse/index.js';
import { distributedDdl } from '../clickhouse/clusterDdl.js';

export interface ClickHouseStandInOptions {
  /** Where the embedded engine keeps its files (one directory per process). */
  dataDir: string;
  /** The database the clients name in their URL. @default 'towerwatch' */
  database?: string;
  /** Basic credentials every request must carry; none: any or none accepted. */
  user?: string;
  password?: string;
  /** Make the engine a one-shard cluster of this name, with the cluster schema in place (see above). */
  cluster?: string;
}

export interface StandInRequest {
  method: string;
  /** The statement as run (without the data of an insert). */
  statement: string;
  /** The table an insert wrote to, with the rows the engine reported. */
  insert: { table: string; format: string; rows: number | undefined } | null;
  settings: Record<string, string>;
  status: number;
}

export interface ClickHouseStandIn extends AsyncDisposable {
  /** `http://127.0.0.1:<port>/<database>`, with the credentials when set: what CLICKHOUSE_URL takes. */
  readonly url: string;
  /** The engine behind it, to read what arrived. */
  readonly engine: ClickHouseHandle;
  /** Every request answered, oldest first. */
  readonly requests: readonly StandInRequest[];
  /** Insert statements per table that the engine took (whatever their rows: Native inserts report none). */
  inserts(table: string): number;
  close(): Promise<void>;
}

/** URL parameters that are part of the HTTP protocol, not settings. */
const PROTOCOL_PARAMS = new Set(['query', 'database', 'query_id', 'default_format', 'session_id', 'session_timeout', 'session_check', 'user', 'password']);
const INSERT = /^\s*INSERT\s+INTO\s+([A-Za-z_][\w.]*)\s*(?:\(([^)]*)\))?\s*(?:SETTINGS\s+.+?\s+)?FORMAT\s+(\w+)\s*$/is;
const READS = /^\s*(SELECT|WITH|SHOW|EXPLAIN|DESCRIBE|DESC|EXISTS)\b/i;
const HAS_FORMAT = /\bFORMAT\s+\w+\s*;?\s*$/i;
/** A placeholder's type decides whether its value is a top-level string, sent TSV-escaped. */
const PLACEHOLDER = /\{([A-Za-z_]\w*)\s*:\s*([^}]+)\}/g;
const STRING_TYPE = /^(Nullable\(|LowCardinality\()*(String|FixedString|UUID|Enum)/;

export async function startClickHouseStandIn(options: ClickHouseStandInOptions): Promise<ClickHouseStandIn> {
  const database = options.database ?? DEFAULT_DATABASE;
  // The engine takes its configuration from the first opener of its directory in the process.
  const session = options.cluster === undefined ? null : await openClusterEngine(options.dataDir, options.cluster);
  const engine = await openClickHouse({ clickhouseUrl: null, dataDir: options.dataDir, database });
  if (options.cluster !== undefined) {
    await migrate(engine, { retentionDays: 30 });
    for (const statement of distributedDdl(database, options.cluster)) await engine.client.command({ query: statement.replace(/ ON CLUSTER '[^']*'/, '') });
  }
  const requests: StandInRequest[] = [];
  const inserted = new Map<string, number>();
  const expectedAuth = options.user === undefined ? null : `Basic ${Buffer.from(`${options.user}:${options.password ?? ''}`).toString('base64')}`;

  const answer = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://stand-in');
    const queryId = url.searchParams.get('query_id') ?? randomUUID();
    res.setHeader('X-ClickHouse-Query-Id', queryId);
    if (url.pathname === '/ping') {
      res.end('Ok.\n');
      return;
    }
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    let body = Buffer.concat(chunks);
    if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
    const settings: Record<string, string> = {};
    const params: Record<string, string> = {};
    for (const [k, v] of url.searchParams) {
      if (k.startsWith('param_')) params[k.slice('param_'.length)] = v;
      else if (!PROTOCOL_PARAMS.has(k)) settings[k] = v;
    }
    const inUrl = url.searchParams.get('query');
    const record: StandInRequest = { method: req.method ?? '', statement: inUrl ?? body.toString('utf8'), insert: null, settings, status: 200 };
    requests.push(record);
    try {
      if (expectedAuth !== null && req.headers.authorization !== expectedAuth) {
        throw new ClickHouseError({
          message: `${options.user ?? ''}: Authentication failed: password is incorrect, or there is no user with such name`,
          code: '516',
          type: 'AUTHENTICATION_FAILED',
        });
      }
      const db = url.searchParams.get('database');
      if (db !== null && db !== database && db !== 'default') {
        throw new ClickHouseError({ message: `the stand-in serves database ${database} only, not ${db}`, code: '81', type: 'UNKNOWN_DATABASE' });
      }
      const insert = inUrl === null ? null : INSERT.exec(inUrl);
      if (insert !== null && body.byteLength > 0) {
        const [, table = '', columns, format = ''] = insert;
        let rows: number | undefined;
        if (columns !== undefined) {
          // The engine's own insert path (Native goes through a spool file there).
          const columnList = columns.split(',').map((c) => c.trim());
          rows = (await engine.insertFormatted({ table, columns: columnList, format: format as FormattedInsertFormat, body, settings })).writtenRows;
        } else {
          const r = await engine.client.exec({ query: inUrl ?? '', values: Readable.from([body]), clickhouse_settings: settings });
          for await (const chunk of r.stream) void chunk;
          rows = r.summary?.written_rows === undefined ? undefined : Number(r.summary.written_rows);
        }
        const name = table.includes('.') ? table.slice(table.indexOf('.') + 1) : table;
        inserted.set(name, (inserted.get(name) ?? 0) + 1);
        record.insert = { table: name, format, rows };
        res.setHeader('X-ClickHouse-Summary', JSON.stringify({ written_rows: String(rows ?? 0) }));
        res.end();
        return;
      }
      let statement = [inUrl, body.byteLength > 0 ? body.toString('utf8') : null].filter((s) => s !== null).join('\n');
      if (READS.test(statement) && !HAS_FORMAT.test(statement)) statement += `\nFORMAT ${url.searchParams.get('default_format') ?? 'TabSeparated'}`;
      record.statement = statement;
      const result = await engine.client.exec({ query: statement, clickhouse_settings: settings, query_params: unescapeStrings(statement, params) });
      const out: Buffer[] = [];
      for await (const c of result.stream) out.push(c as Buffer);
      res.setHeader('X-ClickHouse-Summary', JSON.stringify(result.summary ?? {}));
      res.end(Buffer.concat(out));
    } catch (err) {
      const e =
        err instanceof ClickHouseError
          ? err
          : new ClickHouseError({ message: err instanceof Error ? err.message : String(err), code: '1001', type: 'STD_EXCEPTION' });
      record.status = e.code === '516' ? 401 : 500;
      res.statusCode = record.status;
      res.setHeader('X-ClickHouse-Exception-Code', e.code);
      res.end(`Code: ${e.code}. DB::Exception: ${e.message}. (${e.type ?? 'UNKNOWN'}) (version stand-in)\n`);
    }
  };

  const server = createServer((req, res) => {
    answer(req, res).catch((err: unknown) => {
      // Only a failure to write the answer gets here: the connection is gone.
      res.destroy(err instanceof Error ? err : new Error(String(err)));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const auth = options.user === undefined ? '' : `${encodeURIComponent(options.user)}:${encodeURIComponent(options.password ?? '')}@`;
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await engine.close();
      session?.close();
    })());
  return {
    url: `http://${auth}127.0.0.1:${port}/${database}`,
    engine,
    requests,
    inserts: (table) => inserted.get(table) ?? 0,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/**
 * @clickhouse/client sends a top-level string parameter TSV-escaped (`\t`, `\n`, `\\`, `\'`),
 * which a server unescapes; chdb's binder takes strings as they are, so unescape those here.
 */
function unescapeStrings(statement: string, params: Record<string, string>): Record<string, string> {
  const out = { ...params };
  for (const [, name = '', type = ''] of statement.matchAll(PLACEHOLDER)) {
    const v = out[name];
    if (v === undefined || !STRING_TYPE.test(type.trim())) continue;
    out[name] = v.replace(/\\(.)/gs, (_, c: string) => ({ t: '\t', n: '\n', r: '\r', '0': '\0', b: '\b', f: '\f' })[c] ?? c);
  }
  return out;
}

/** A session on the embedded directory that configures the engine as a one-shard cluster of itself. */
async function openClusterEngine(dataDir: string, cluster: string): Promise<Session> {
  const dir = join(dataDir, EMBEDDED_SUBDIR);
  await mkdir(dir, { recursive: true });
  const config = join(dataDir, 'stand-in-cluster.xml');
  // The replica is local when its host and port are this engine's own (tcp_port; nothing listens).
  await writeFile(
    config,
    `<clickhouse>
      <tcp_port>9000</tcp_port>
      <remote_servers><${cluster}><shard><replica><host>localhost</host><port>9000</port></replica></shard></${cluster}></remote_servers>
      <macros><shard>1</shard><replica>r1</replica></macros>
    </clickhouse>`,
  );
  return new Session(dir, { connectionArgs: [`--config-file=${config}`] });
}

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { scrypt } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingHttpHeaders } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { ClickHouseError } from '@clickhouse/client';
import { ClickHouseOpenError, INFILE_MIN_BYTES, openClickHouse, type ClickHouseHandle } from './open.js';
import { spoolBase } from './spool.js';

// One embedded data directory per test process (libchdb binds one per process).
let dir: string;
let ch: ClickHouseHandle;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'towerwatch-ch-'));
  ch = await openClickHouse({ clickhouseUrl: null, dataDir: dir, database: 'ch_test' });
});
after(async () => {
  await ch?.close();
  await rm(dir, { recursive: true, force: true });
});

async function rows<T>(query: string, clickhouse_settings?: Record<string, string | number>): Promise<T[]> {
  return (await ch.client.query({ query, format: 'JSONEachRow', ...(clickhouse_settings ? { clickhouse_settings } : {}) })).json<T>();
}

test('embedded: the database exists and is the default one', async () => {
  assert.equal(ch.embedded, true);
  assert.equal(ch.database, 'ch_test');
  assert.equal(ch.location, join(dir, 'clickhouse'));
  assert.deepEqual(await rows('SELECT currentDatabase() AS db'), [{ db: 'ch_test' }]);
  await ch.client.command({ query: 'CREATE TABLE plain (k UInt32) ENGINE = MergeTree ORDER BY k' });
  assert.deepEqual(await rows("SELECT database FROM system.tables WHERE name = 'plain'"), [{ database: 'ch_test' }]);
});

test('clickhouse_settings stay scoped to their call (chdb would keep them on the session)', async () => {
  await ch.client.command({ query: 'SELECT 1', clickhouse_settings: { insert_deduplication_token: 'leak', max_threads: 1, wait_end_of_query: 1 } });
  assert.deepEqual(await rows("SELECT getSetting('insert_deduplication_token') AS t, toUInt8(getSetting('max_threads') = 1) AS one"), [{ t: '', one: 0 }]);
  assert.deepEqual(await rows("SELECT toUInt32(getSetting('max_threads')) AS m", { max_threads: 1 }), [{ m: 1 }]);

  // The harm it prevents: a token left on the session would drop every later insert.
  await ch.client.command({
    query: 'CREATE TABLE dedup (k UInt32) ENGINE = MergeTree ORDER BY k SETTINGS non_replicated_deduplication_window = 100',
  });
  await ch.client.insert({ table: 'dedup', values: [{ k: 1 }], format: 'JSONEachRow', clickhouse_settings: { insert_deduplication_token: 'T' } });
  await ch.client.insert({ table: 'dedup', values: [{ k: 2 }], format: 'JSONEachRow' });
  await ch.client.insert({ table: 'dedup', values: [{ k: 3 }], format: 'JSONEachRow', clickhouse_settings: { insert_deduplication_token: 'T' } });
  assert.deepEqual(await rows('SELECT k FROM dedup ORDER BY k'), [{ k: 1 }, { k: 2 }]);
});

test('insertFormatted: statement-scoped settings, explicit columns, server errors as ClickHouseError', async () => {
  await ch.client.command({ query: "CREATE TABLE fmt (a UInt32, s String, d String DEFAULT 'dflt') ENGINE = MergeTree ORDER BY a" });
  const r = await ch.insertFormatted({
    table: 'fmt',
    columns: ['s', 'a'],
    format: 'TabSeparated',
    body: Buffer.from('x\t1\ny\t2\n'),
    settings: { insert_deduplication_token: 'scoped', max_threads: 1 },
  });
  assert.equal(r.writtenRows, 2);
  assert.deepEqual(await rows('SELECT a, s, d FROM fmt ORDER BY a'), [
    { a: 1, s: 'x', d: 'dflt' },
    { a: 2, s: 'y', d: 'dflt' },
  ]);
  assert.deepEqual(await rows("SELECT getSetting('insert_deduplication_token') AS t"), [{ t: '' }]);
  await assert.rejects(
    ch.insertFormatted({ table: 'fmt', columns: ['a'], format: 'TabSeparated', body: Buffer.from('notanumber\n') }),
    (e: unknown) => e instanceof ClickHouseError && e.code === '27' && typeof e.type === 'string',
  );
  // The client's own calls too (chdb throws a second copy of the class; the handle unifies them).
  await assert.rejects(
    ch.client.query({ query: 'SELECT * FROM no_such_table' }),
    (e: unknown) => e instanceof ClickHouseError && e.code === '60' && e.type === 'UNKNOWN_TABLE',
  );
  await assert.rejects(
    ch.insertFormatted({ table: 'fmt', columns: ['a; DROP TABLE fmt'], format: 'TabSeparated', body: Buffer.from('1\n') }),
    (e: unknown) => e instanceof ClickHouseOpenError && e.code === 'invalid_options',
  );
});

test('a second process cannot open the same embedded directory: data_dir_locked naming our PID', async () => {
  const moduleUrl = new URL('./open.js', import.meta.url).href;
  const script = `
    const { openClickHouse } = await import(${JSON.stringify(moduleUrl)});
    try {
      const h = await openClickHouse({ clickhouseUrl: null, dataDir: ${JSON.stringify(dir)} });
      await h.close();
      console.log(JSON.stringify({ opened: true }));
    } catch (e) {
      console.log(JSON.stringify({ code: e.code, message: e.message }));
    }`;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { timeout: 60_000 });
  const result = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as { code?: string; message?: string };
  assert.equal(result.code, 'data_dir_locked');
  assert.match(result.message ?? '', new RegExp(`in use by process ${process.pid}\\b`));
  assert.match(result.message ?? '', /CLICKHOUSE_URL/);
});

test('the same directory may be opened twice in one process; a different one may not', async () => {
  const again = await openClickHouse({ clickhouseUrl: null, dataDir: dir, database: 'ch_test_2' });
  try {
    assert.deepEqual(await (await again.client.query({ query: 'SELECT currentDatabase() AS db', format: 'JSONEachRow' })).json(), [{ db: 'ch_test_2' }]);
    // It sees the other handle's data: one engine.
    assert.deepEqual(await (await again.client.query({ query: 'SELECT count() AS n FROM ch_test.fmt', format: 'JSONEachRow' })).json(), [{ n: 2 }]);
  } finally {
    await again.close();
  }
  const other = await mkdtemp(join(tmpdir(), 'towerwatch-ch-other-'));
  try {
    await assert.rejects(
      openClickHouse({ clickhouseUrl: null, dataDir: other }),
      (e: unknown) => e instanceof ClickHouseOpenError && e.code === 'data_dir_conflict' && e.message.includes(dir),
    );
  } finally {
    await rm(other, { recursive: true, force: true });
  }
});

test('an unreachable server: a clear error without the password', async () => {
  const port = await new Promise<number>((resolve) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      srv.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
  await assert.rejects(
    openClickHouse({ clickhouseUrl: `http://towerwatch:s3cret@127.0.0.1:${port}/analytics`, dataDir: dir, requestTimeoutMs: 5_000 }),
    (e: unknown) =>
      e instanceof ClickHouseOpenError &&
      e.code === 'unreachable' &&
      e.message.includes(`http://towerwatch:***@127.0.0.1:${port}/`) &&
      e.message.includes('ECONNREFUSED') &&
      !e.message.includes('s3cret'),
  );
});

test('server path (against a stand-in HTTP server): database from the URL, scoped settings, column list', async () => {
  const seen: Array<{ method: string; url: URL; headers: IncomingHttpHeaders; body: string; raw: Buffer }> = [];
  const server = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      seen.push({ method: req.method ?? '', url: new URL(req.url ?? '/', 'http://x'), headers: req.headers, body: raw.toString(), raw });
      res.setHeader('X-ClickHouse-Summary', JSON.stringify({ written_rows: '2' }));
      res.end('');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as AddressInfo;
    const h = await openClickHouse({ clickhouseUrl: `http://tw:pw@127.0.0.1:${port}/analytics`, dataDir: dir });
    try {
      assert.equal(h.embedded, false);
      assert.equal(h.database, 'analytics');
      assert.equal(h.location, `http://tw:***@127.0.0.1:${port}/`);
      const r = await h.insertFormatted({
        table: 'app_usage',
        columns: ['a', 'b'],
        format: 'TabSeparated',
        body: Buffer.from('1\tx\n2\ty\n'),
        settings: { insert_deduplication_token: 'tok-1', async_insert: 0 },
      });
      assert.equal(r.writtenRows, 2);
      const native = Buffer.from([2, 1, 1, 97, 6, 85, 73, 110, 116, 54, 52, 1, 0, 0, 0, 0, 0, 0, 0, 0xff]);
      await h.insertFormatted({ table: 'app_usage', columns: ['a'], format: 'Native', body: native, settings: { insert_deduplication_token: 'tok-2' } });
      // JSON bodies too (@clickhouse/client's insert() refused a raw JSON stream before any request).
      await h.insertFormatted({ table: 'dead_letters', columns: ['a', 'b'], format: 'JSONEachRow', body: Buffer.from('{"a":1,"b":"x"}\n') });
    } finally {
      await h.close();
    }
    const auth = `Basic ${Buffer.from('tw:pw').toString('base64')}`;
    assert.ok(seen.every((s) => s.headers.authorization === auth));
    assert.equal(seen[0]?.url.searchParams.get('query'), "SELECT 'ping'");
    assert.equal(seen[1]?.body, 'CREATE DATABASE IF NOT EXISTS analytics');
    assert.equal(seen[1]?.url.searchParams.get('database'), null);
    const insert = seen[2];
    assert.equal(insert?.method, 'POST');
    assert.equal(insert?.url.searchParams.get('query'), 'INSERT INTO analytics.app_usage (a, b) FORMAT TabSeparated');
    assert.equal(insert?.url.searchParams.get('database'), 'analytics');
    assert.equal(insert?.url.searchParams.get('insert_deduplication_token'), 'tok-1');
    assert.equal(insert?.url.searchParams.get('async_insert'), '0');
    assert.equal(insert?.body, '1\tx\n2\ty\n');
    // A binary body goes as the request body of the statement, byte for byte.
    const nativeInsert = seen[3];
    assert.equal(nativeInsert?.method, 'POST');
    assert.equal(nativeInsert?.url.searchParams.get('query'), 'INSERT INTO analytics.app_usage (a) FORMAT Native');
    assert.equal(nativeInsert?.url.searchParams.get('insert_deduplication_token'), 'tok-2');
    assert.deepEqual(nativeInsert?.raw, Buffer.from([2, 1, 1, 97, 6, 85, 73, 110, 116, 54, 52, 1, 0, 0, 0, 0, 0, 0, 0, 0xff]));
    const jsonInsert = seen[4];
    assert.equal(jsonInsert?.url.searchParams.get('query'), 'INSERT INTO analytics.dead_letters (a, b) FORMAT JSONEachRow');
    assert.equal(jsonInsert?.body, '{"a":1,"b":"x"}\n');
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});

test('insertFormatted: a large body goes through a spool file, with the same settings, dedup and errors', async () => {
  await ch.client.command({
    query: 'CREATE TABLE big (a UInt32, s String) ENGINE = MergeTree ORDER BY a SETTINGS non_replicated_deduplication_window = 100',
  });
  const lines: string[] = [];
  for (let i = 0; i < 100_000; i++) lines.push(`${i}\tvalue with a tab\\t and quote ' number ${i}`);
  const body = Buffer.from(`${lines.join('\n')}\n`);
  assert.ok(body.byteLength >= INFILE_MIN_BYTES, 'the body is past the spool threshold');
  const insert = {
    table: 'big',
    columns: ['a', 's'],
    format: 'TabSeparated',
    body,
    settings: { insert_deduplication_token: "tok'1", max_threads: 2 },
  } as const;
  await ch.insertFormatted(insert);
  await ch.insertFormatted(insert); // same token: dropped
  assert.deepEqual(await rows("SELECT count() AS n, uniqExact(a) AS u, any(s) LIKE '%\t and quote '' %' AS kept FROM big"), [
    { n: 100_000, u: 100_000, kept: 1 },
  ]);
  assert.deepEqual(await rows("SELECT getSetting('insert_deduplication_token') AS t"), [{ t: '' }], "the settings were the statement's only");

  const bad = Buffer.concat([body, Buffer.from('notanumber\tx\n')]);
  await assert.rejects(
    ch.insertFormatted({ ...insert, body: bad, settings: { insert_deduplication_token: 'tok2' } }),
    (e: unknown) => e instanceof ClickHouseError && e.code === '27' && /notanumber|row 100001/.test(e.message),
  );
  assert.deepEqual(await rows('SELECT count() AS n FROM big'), [{ n: 100_000 }], 'a rejected insert stores nothing');
  const spools = (await readdir(spoolBase())).filter((n) => n.startsWith(`towerwatch-insert-${process.pid}-`));
  assert.equal(spools.length, 1, 'one spool directory for this process');
  assert.deepEqual(await readdir(join(spoolBase(), spools[0] as string)), [], 'no file is left behind');
});

test('queued engine calls leave the thread pool to files and crypto (one pool thread per connection)', async () => {
  // Each query holds its connection for tens of ms; chdb would park every queued one on a pool thread.
  const slow = (): Promise<number> =>
    ch.client
      .query({ query: 'SELECT count() AS n FROM numbers(100000000) WHERE number % 7 = 3', format: 'JSONEachRow' })
      .then((r) => r.json())
      .then(() => performance.now());
  await ch.client.command({ query: 'CREATE TABLE pool_probe (a UInt32, s String) ENGINE = MergeTree ORDER BY a' });
  const started = performance.now();
  const queries = Array.from({ length: 8 }, slow);
  const inserts = Array.from({ length: 2 }, (_, i) =>
    ch.insertFormatted({ table: 'pool_probe', columns: ['a', 's'], format: 'TabSeparated', body: Buffer.from(`${i}\tx\n`) }),
  );
  // open + write + close (three pool jobs), then scrypt (one).
  const spare = join(dir, 'pool-probe');
  await writeFile(spare, 'probe');
  const wrote = performance.now();
  await promisify(scrypt)('pw', 'salt', 32);
  const hashed = performance.now();
  const done = await Promise.all(queries);
  await Promise.all(inserts);
  const firstQuery = Math.min(...done);
  assert.ok(wrote < firstQuery, `the file was written ${Math.round(wrote - started)} ms in, the first query ended at ${Math.round(firstQuery - started)} ms`);
  assert.ok(hashed < firstQuery, `scrypt ended ${Math.round(hashed - started)} ms in, the first query at ${Math.round(firstQuery - started)} ms`);
  // Still one after the other, as the connection runs them.
  const sorted = [...done].sort((a, b) => a - b);
  assert.deepEqual(done, sorted, 'queries end in the order they were made');
});

test('options are checked', async () => {
  await assert.rejects(openClickHouse({ clickhouseUrl: null, dataDir: dir, database: 'bad-name' }), /database must be an identifier/);
  await assert.rejects(openClickHouse({ clickhouseUrl: 'http://x', dataDir: dir, requestTimeoutMs: -1 }), /requestTimeoutMs/);
});

test('close() is idempotent, and a closed handle refuses inserts; then another directory can open', async () => {
  const h = await openClickHouse({ clickhouseUrl: null, dataDir: dir, database: 'ch_test_3' });
  await h.close();
  await h.close();
  await assert.rejects(
    h.insertFormatted({ table: 't', columns: ['a'], format: 'TabSeparated', body: Buffer.from('1\n') }),
    (e: unknown) => e instanceof ClickHouseOpenError && e.code === 'closed',
  );
  // Release the process's directory entirely, open a different one, then return.
  await ch.close();
  const other = await mkdtemp(join(tmpdir(), 'towerwatch-ch-other-'));
  try {
    await using h2 = await openClickHouse({ clickhouseUrl: null, dataDir: other });
    assert.deepEqual(await (await h2.client.query({ query: 'SELECT 1 AS one', format: 'JSONEachRow' })).json(), [{ one: 1 }]);
  } finally {
    await rm(other, { recursive: true, force: true });
  }
});

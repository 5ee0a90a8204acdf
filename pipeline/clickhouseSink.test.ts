import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ClickHouseError } from '@clickhouse/client';
import { APP_USAGE, type AppUsageRow, type ClickHouseHandle, DEAD_LETTERS, migrate, openClickHouse, TsvWriter } from '../core/clickhouse/index.js';
import { projectionTotalQuery } from '../core/testing/rollups.js';
import { ClickHouseSink, ClickHouseSinkError, isTransientInsertError, type InsertMetrics, type RetryInfo } from './clickhouseSink.js';

// One embedded data directory per test process; each test gets its own database.
let dir: string;
const handles: ClickHouseHandle[] = [];
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'towerwatch-sink-'));
});
after(async () => {
  for (const h of handles) await h.close();
  await rm(dir, { recursive: true, force: true });
});

let dbNo = 0;
async function freshDatabase(): Promise<ClickHouseHandle> {
  const h = await openClickHouse({ clickhouseUrl: null, dataDir: dir, database: `sink_${++dbNo}` });
  handles.push(h);
  await migrate(h, { retentionDays: 30 });
  return h;
}

async function count(h: ClickHouseHandle, sql: string): Promise<number> {
  const rows = await (await h.client.query({ query: sql, format: 'JSONEachRow' })).json<{ n: string | number }>();
  return Number(rows[0]?.n);
}

// Recent timestamps: rows older than the retention TTL are dropped as they are inserted.
const BASE_TS = Date.now() - 3_600_000;

function batch(seq: number, events: number, firstEventId = 1): Uint8Array {
  const w = new TsvWriter();
  for (let i = 0; i < events; i++) {
    const row: AppUsageRow = {
      enterprise_id: 'acme',
      ts: BASE_TS + i,
      carrier: 'att',
      tower_id: 't1',
      event_id: firstEventId + i,
      stream_seq: seq,
      device_id: `d${i % 3}`,
      user_id: 'u',
      user_name: 'U',
      app_id: 'a',
      app_name: 'A',
      app_category: 'c',
      action_id: 'x',
      action_name: 'X',
      bytes_up: 1,
      bytes_down: 2,
      verdict: 'allow',
      policy_id: 'p',
      policy_name: 'P',
      rule_id: '',
      severity: '',
      remediation: '',
      policy_version: 'v1',
      role_ids: 'r',
      region: 'east',
      os: 'iOS',
      os_version: '17',
      decision_inputs: 1,
      shadow_verdict: '',
      shadow_policy_id: '',
      shadow_rule_id: '',
    };
    APP_USAGE.writeRow(w, row);
  }
  return w.finish();
}

test('a body in parts is stored whole, inline or through a spool file, and counted from its parts', async () => {
  const h = await freshDatabase();
  const metrics: InsertMetrics[] = [];
  const sink = new ClickHouseSink(h, { onInsert: (m) => metrics.push(m) });
  // Small: joined and inserted inline. Large (over INFILE_MIN_BYTES): written part after part to a file.
  const small = [batch(1, 20), batch(2, 30, 21)];
  const large = [batch(3, 12_000), batch(4, 14_000, 12_001)];
  assert.ok(large.reduce((n, p) => n + p.byteLength, 0) > 1 << 20);
  await sink.insert('app_usage', small, { token: 'app_usage:parts-small' });
  await sink.insert('app_usage', large, { token: 'app_usage:parts-large' });
  assert.equal(await count(h, `SELECT count() AS n FROM ${h.database}.app_usage`), 26_050);
  assert.equal(await count(h, `SELECT uniqExact(stream_seq, event_id) AS n FROM ${h.database}.app_usage`), 26_050);
  assert.deepEqual(
    metrics.map((m) => [m.rows, m.bytes]),
    [
      [50, small[0]!.byteLength + small[1]!.byteLength],
      [26_000, large[0]!.byteLength + large[1]!.byteLength],
    ],
  );
  await sink.close();
});

test('the same token stores a batch once (projections included); another token stores it again', async () => {
  const h = await freshDatabase();
  const metrics: InsertMetrics[] = [];
  const sink = new ClickHouseSink(h, { onInsert: (m) => metrics.push(m) });
  const body = batch(1, 50);
  await sink.insert('app_usage', body, { token: 'app_usage:1-1' });
  await sink.insert('app_usage', body, { token: 'app_usage:1-1' });
  assert.equal(await count(h, `SELECT count() AS n FROM ${h.database}.app_usage`), 50);
  assert.equal(await count(h, projectionTotalQuery('app_usage', 'per_minute', h.database)), 50);
  assert.equal(await count(h, projectionTotalQuery('app_usage', 'device_days', h.database)), 50);

  await sink.insert('app_usage', body, { token: 'app_usage:1-1-again', rows: 50 });
  assert.equal(await count(h, `SELECT count() AS n FROM ${h.database}.app_usage`), 100);
  assert.equal(await count(h, projectionTotalQuery('app_usage', 'per_minute', h.database)), 100);

  assert.equal(metrics.length, 3);
  assert.deepEqual(
    metrics.map((m) => [m.table, m.rows, m.bytes, m.attempts]),
    [
      ['app_usage', 50, body.byteLength, 1],
      ['app_usage', 50, body.byteLength, 1],
      ['app_usage', 50, body.byteLength, 1],
    ],
  );
  assert.ok(metrics.every((m) => m.latencyMs > 0));
  const stats = sink.stats();
  assert.equal(stats.inserts, 3);
  assert.equal(stats.rows, 150);
  assert.equal(stats.bytes, 3 * body.byteLength);
  assert.equal(stats.retries, 0);
  await sink.close();
});

test('a token used on one connection does not leak into later inserts', async () => {
  const h = await freshDatabase();
  const sink = new ClickHouseSink(h);
  await sink.insert('app_usage', batch(1, 5), { token: 'tok-A' });
  // Plain client inserts afterwards, no token: each must be stored.
  for (const stream_seq of [1, 2]) {
    await h.client.insert({
      table: `${h.database}.dead_letters`,
      values: [
        {
          ts: new Date(BASE_TS).toISOString().replace('T', ' ').replace('Z', ''),
          stream: 'USAGE',
          subject: 's',
          stream_seq,
          code: 'c',
          message: 'm',
          event_index: -1,
          payload_base64: '',
        },
      ],
      format: 'JSONEachRow',
    });
  }
  assert.equal(await count(h, `SELECT count() AS n FROM ${h.database}.dead_letters`), 2);
});

test('storedSeqs tells which sequences have rows', async () => {
  const h = await freshDatabase();
  const sink = new ClickHouseSink(h);
  await sink.insert('app_usage', batch(7, 3), { token: 't7' });
  await sink.insert('app_usage', batch(9, 2, 100), { token: 't9' });
  const big = 2 ** 40 + 1;
  await sink.insert('app_usage', batch(big, 1, 200), { token: 'tbig' });
  const w = new TsvWriter();
  DEAD_LETTERS.writeRow(w, {
    ts: BASE_TS,
    stream: 'USAGE',
    subject: 'usage.att.t1',
    stream_seq: 8,
    code: 'bad_frame',
    message: 'not msgpack',
    event_index: -1,
    payload_base64: 'AAE=',
    rejected_count: 1,
    rejections: '',
    payload_bytes: 2,
    payload_truncated: false,
  });
  await sink.insert('dead_letters', w.finish(), { token: 'dl8' });

  assert.deepEqual(
    [...(await sink.storedSeqs('app_usage', [6, 7, 8, 9, 10, big]))].sort((a, b) => a - b),
    [7, 9, big],
  );
  assert.deepEqual([...(await sink.storedSeqs('dead_letters', [7, 8, 9]))], [8]);
  assert.deepEqual([...(await sink.storedSeqs('violations', [7, 8, 9]))], []);
  assert.deepEqual([...(await sink.storedSeqs('app_usage', []))], []);
  // Several tables in one query: the same answers, each table's own (dead_letters of its stream only).
  const all = await sink.storedSeqsIn(['app_usage', 'violations', 'dead_letters'], [6, 7, 8, 9, 10, big]);
  assert.deepEqual(
    [...(all.get('app_usage') ?? [])].sort((a, b) => a - b),
    [7, 9, big],
  );
  assert.deepEqual([...(all.get('violations') ?? ['missing'])], []);
  assert.deepEqual([...(all.get('dead_letters') ?? [])], [8]);
  assert.deepEqual([...((await sink.storedSeqsIn(['dead_letters'], [8], 'DISCOVERY')).get('dead_letters') ?? ['missing'])], []);
  assert.deepEqual([...(await sink.storedSeqsIn(['app_usage'], [])).keys()], ['app_usage']);
  await assert.rejects(sink.storedSeqsIn(['app_usage', 'nope' as 'app_usage'], [1]), /unknown table nope/);
  await assert.rejects(sink.storedSeqs('nope', [1]), /unknown table/);
});

test("a wrong column count is a permanent error with ClickHouse's message, not retried", async () => {
  const h = await freshDatabase();
  const retries: RetryInfo[] = [];
  const sink = new ClickHouseSink(h, { onRetry: (r) => retries.push(r), retry: { initialDelayMs: 1000 } });
  const body = Buffer.from('acme\t1764000000.000\tatt\n'); // 3 fields for 23 columns
  const started = performance.now();
  const err = await sink.insert('app_usage', body, { token: 'bad' }).then(
    () => assert.fail('insert should fail'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof ClickHouseSinkError);
  assert.equal(err.code, 'insert_rejected');
  assert.equal(err.attempts, 1);
  assert.equal(err.table, 'app_usage');
  assert.match(err.message, /ClickHouse rejected the insert into app_usage \(1 rows\): .*Cannot parse input/s);
  assert.ok(err.clickhouseType !== undefined && /PARSE|INCORRECT_DATA|INPUT/.test(err.clickhouseType), err.clickhouseType);
  assert.ok(err.cause instanceof ClickHouseError);
  assert.equal(retries.length, 0);
  assert.ok(performance.now() - started < 900, 'no backoff wait');
  assert.equal(sink.stats().failures, 1);

  // Unknown table: permanent as well.
  await assert.rejects(
    sink.insert('no_such_table', body, { token: 'x', columns: ['a'] }),
    (e: unknown) => e instanceof ClickHouseSinkError && e.code === 'insert_rejected' && /UNKNOWN_TABLE|does not exist/.test(e.message),
  );
});

/** A handle whose first `failures` inserts fail with `error`, then pass through. */
function flaky(h: ClickHouseHandle, failures: number, error: () => unknown): ClickHouseHandle & { calls: number } {
  const wrapped = {
    ...h,
    calls: 0,
    insertFormatted: async (insert: Parameters<ClickHouseHandle['insertFormatted']>[0]) => {
      wrapped.calls++;
      if (wrapped.calls <= failures) throw error();
      return h.insertFormatted(insert);
    },
  };
  return wrapped;
}

const overloaded = () => new ClickHouseError({ message: 'Too many simultaneous queries', code: '202', type: 'TOO_MANY_SIMULTANEOUS_QUERIES' });

test('transient errors are retried with backoff, and the token keeps the retried batch single', async () => {
  const h = await freshDatabase();
  const f = flaky(h, 2, overloaded);
  const retries: RetryInfo[] = [];
  const metrics: InsertMetrics[] = [];
  const sink = new ClickHouseSink(f, {
    retry: { initialDelayMs: 20, maxDelayMs: 30, jitter: false },
    onRetry: (r) => retries.push(r),
    onInsert: (m) => metrics.push(m),
  });
  await sink.insert('app_usage', batch(1, 4), { token: 'retry-1' });
  assert.equal(f.calls, 3);
  assert.deepEqual(
    retries.map((r) => [r.attempt, r.delayMs]),
    [
      [1, 20],
      [2, 30],
    ],
  );
  assert.equal(metrics[0]?.attempts, 3);
  assert.ok((metrics[0]?.latencyMs ?? 0) >= 50);
  assert.equal(sink.stats().retries, 2);
  assert.equal(await count(h, `SELECT count() AS n FROM ${h.database}.app_usage`), 4);

  // Network errors count as transient too; after maxAttempts the sink gives up.
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:8123'), { code: 'ECONNREFUSED' });
  const down = flaky(h, 100, () => refused);
  const giveUp = new ClickHouseSink(down, { retry: { initialDelayMs: 1, maxDelayMs: 2, maxAttempts: 3 } });
  await assert.rejects(
    giveUp.insert('app_usage', batch(2, 1), { token: 'retry-2' }),
    (e: unknown) => e instanceof ClickHouseSinkError && e.code === 'insert_retries_exhausted' && e.attempts === 3 && /ECONNREFUSED/.test(e.message),
  );
  assert.equal(down.calls, 3);
});

test('close() cuts a backoff wait short and refuses new inserts', async () => {
  const h = await freshDatabase();
  const sink = new ClickHouseSink(flaky(h, 100, overloaded), { retry: { initialDelayMs: 60_000, maxDelayMs: 60_000 } });
  const pending = sink.insert('app_usage', batch(1, 1), { token: 'c1' });
  const rejected = assert.rejects(pending, (e: unknown) => e instanceof ClickHouseSinkError && e.code === 'sink_closed');
  await new Promise((r) => setImmediate(r));
  const started = performance.now();
  await sink.close();
  await rejected;
  assert.ok(performance.now() - started < 5_000);
  await sink.close(); // idempotent
  await assert.rejects(sink.insert('app_usage', batch(1, 1), { token: 'c2' }), /closed/);
});

test('classification of errors', () => {
  assert.equal(isTransientInsertError(overloaded()), true);
  assert.equal(isTransientInsertError(new ClickHouseError({ message: 'x', code: '252', type: 'TOO_MANY_PARTS' })), true);
  assert.equal(isTransientInsertError(new ClickHouseError({ message: 'x', code: '27', type: 'CANNOT_PARSE_INPUT_ASSERTION_FAILED' })), false);
  assert.equal(isTransientInsertError(new ClickHouseError({ message: 'x', code: '60', type: 'UNKNOWN_TABLE' })), false);
  assert.equal(isTransientInsertError(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' })), true);
  assert.equal(isTransientInsertError(new Error('Timeout error.')), true);
  assert.equal(isTransientInsertError(new TypeError('bad argument')), false);
  assert.throws(() => new ClickHouseSink({} as ClickHouseHandle, { retry: { maxAttempts: 0 } }), /maxAttempts/);
  assert.throws(() => new ClickHouseSink({} as ClickHouseHandle, { retry: { initialDelayMs: 10, maxDelayMs: 5 } }), /maxDelayMs/);
});

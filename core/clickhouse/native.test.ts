import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ClickHouseError } from '@clickhouse/client';
import { rows as rowsOf, withClickHouse } from '../testing/clickhouseFixture.js';
import { NativeWriter, nativeBlockRows } from './native.js';
import type { ClickHouseHandle } from './open.js';
import { RowTable } from './rows.js';
import { TsvEncodeError } from './tsv.js';

// Every column kind, and the table types the pipeline writes them into (converted on insert).
const T = new RowTable('kinds', [
  ['s', 'string'],
  ['lc', 'symbol'],
  ['verdict', 'string'],
  ['u', 'uint'],
  ['u32', 'uint'],
  ['i', 'int'],
  ['f', 'float'],
  ['ts', 'datetime64ms'],
  ['b', 'bool'],
]);
const DDL = (name: string): string => `CREATE TABLE ${name} (
  n UInt32 DEFAULT 0, s String, lc LowCardinality(String), verdict Enum8('allow' = 1, 'deny' = 2),
  u UInt64, u32 UInt32, i Int64, f Float64, ts DateTime64(3, 'UTC'), b Bool
) ENGINE = MergeTree ORDER BY u SETTINGS non_replicated_deduplication_window = 100`;

type Values = [string, string, string, number, number, number, number, number, boolean];
const long = (n: number): string => 'x'.repeat(n);
const ROWS: Values[] = [
  ['', '', 'allow', 0, 0, 0, 0, 0, false],
  ['plain', 'ent-1', 'deny', 1, 1, -1, 1.5, 1_764_000_000_123, true],
  ['tab\there\nline\\back\r\0nul', 'ent-2', 'allow', 4_294_967_296, 4_294_967_295, -(2 ** 40) - 7, -0.25, -86_400_001, true],
  ['naïve café ✓ 𝄞', 'ünïcode', 'deny', Number.MAX_SAFE_INTEGER, 7, Number.MIN_SAFE_INTEGER, 1e300, 253_402_300_799_999, false],
  [long(127), long(128), 'allow', 2 ** 40 + 3, 3, 2 ** 52, Number.NaN, 1, true],
  [long(300), `lone \ud800 surrogate`, 'deny', 5, 5, 5, Infinity, 2, false],
  [`${long(200)}é`, long(20_000), 'allow', 6, 6, -6, -Infinity, 3, true],
];

const clickhouse = withClickHouse('towerwatch-native-');
let opened: Promise<ClickHouseHandle> | undefined;
/** One handle for the file's tests. */
const open = (): Promise<ClickHouseHandle> => (opened ??= clickhouse.open('native_test'));

async function rows<T>(query: string): Promise<T[]> {
  return rowsOf<T>(await open(), query);
}

test('a Native block reads back exactly as the same rows in TabSeparated, every kind and edge value', async () => {
  const ch = await open();
  await ch.client.command({ query: DDL('via_native') });
  await ch.client.command({ query: DDL('via_tsv') });
  const body = T.encodeNative(ROWS);
  assert.equal(nativeBlockRows(body), ROWS.length);
  await ch.insertFormatted({ table: 'via_native', columns: T.columns, format: 'Native', body });
  await ch.insertFormatted({
    table: 'via_tsv',
    columns: T.columns,
    format: 'TabSeparated',
    body: T.encode(ROWS),
    settings: { date_time_input_format: 'basic' },
  });
  const cols = T.columns.join(', ');
  for (const [a, b] of [
    ['via_native', 'via_tsv'],
    ['via_tsv', 'via_native'],
  ]) {
    assert.deepEqual(await rows(`SELECT ${cols} FROM ${a} EXCEPT SELECT ${cols} FROM ${b}`), [], `${a} has nothing ${b} lacks`);
  }
  const got = await rows<Record<string, unknown>>(
    `SELECT s, lc, toString(verdict) AS verdict, toString(u) AS u, i, toUnixTimestamp64Milli(ts) AS ms, b FROM via_native ORDER BY u`,
  );
  assert.equal(got.length, ROWS.length);
  const byU = new Map(got.map((r) => [String(r['u']), r]));
  for (const r of ROWS) {
    const g = byU.get(String(r[3]));
    assert.ok(g, `row u=${r[3]} stored`);
    assert.equal(g['s'], r[0]);
    assert.equal(g['lc'], r[1].replace('\ud800', '\ufffd'));
    assert.equal(g['verdict'], r[2]);
    assert.equal(Number(g['ms']), r[7]);
    assert.equal(g['b'], r[8]);
  }
  assert.equal(String(byU.get(String(2 ** 40 + 3))?.['i']), String(2 ** 52));
  assert.equal(String(byU.get('4294967296')?.['i']), String(-(2 ** 40) - 7));
});

test('a block grows past the rows it expected, and a writer can be used again after finish()', async () => {
  const ch = await open();
  await ch.client.command({ query: DDL('grown') });
  const w = T.nativeWriter(2);
  const write = (from: number, n: number): void => {
    for (let k = from; k < from + n; k++) T.write(w, [`s${k}`, `lc${k % 7}`, k % 2 ? 'deny' : 'allow', k, k, -k, k / 2, 1_764_000_000_000 + k, k % 3 === 0]);
  };
  write(0, 5000);
  const first = w.finish();
  write(5000, 3);
  const second = w.finish();
  assert.equal(nativeBlockRows(first), 5000);
  assert.equal(nativeBlockRows(second), 3);
  for (const body of [first, second]) await ch.insertFormatted({ table: 'grown', columns: T.columns, format: 'Native', body });
  assert.deepEqual(await rows('SELECT count() AS n, sum(u) AS su, sum(i) AS si, uniqExact(s) AS us, countIf(b) AS nb FROM grown'), [
    { n: 5003, su: 12_512_503, si: -12_512_503, us: 5003, nb: 1668 },
  ]);
});

test('a symbol column is a dictionary with the narrowest index that fits: 8, 16 and 32 bits', async () => {
  const ch = await open();
  for (const [distinct, width] of [
    [256, 1],
    [257, 2],
    [65_536, 2],
    [65_537, 4],
  ] as const) {
    const table = `widths_${distinct}`;
    await ch.client.command({ query: DDL(table) });
    const w = T.nativeWriter();
    const n = distinct + 1000;
    // The dictionary holds '' first: distinct - 1 more keys make `distinct` in all.
    const symbol = (k: number): string => (k % distinct === 0 ? '' : `v${k % distinct}`);
    for (let k = 0; k < n; k++) T.write(w, ['s', symbol(k), 'allow', k, 0, 0, 0, 1_764_000_000_000, false]);
    const body = w.finish();
    // Against the same rows with one symbol (one key, 8-bit indexes): the other keys' bytes, and
    // (width - 1) more bytes per row.
    for (let k = 0; k < n; k++) T.write(w, ['s', '', 'allow', k, 0, 0, 0, 1_764_000_000_000, false]);
    const one = w.finish();
    let keyBytes = 0;
    for (let j = 1; j < distinct; j++) keyBytes += 1 + `v${j}`.length;
    assert.equal(body.byteLength - one.byteLength, keyBytes + n * (width - 1), `${distinct} keys: ${width}-byte indexes`);
    await ch.insertFormatted({ table, columns: T.columns, format: 'Native', body });
    assert.deepEqual(await rows(`SELECT count() AS n, uniqExact(lc) AS d, countIf(lc = 'v1') AS v1, countIf(lc = '') AS empty FROM ${table}`), [
      { n, d: distinct, v1: Math.floor((n - 2) / distinct) + 1, empty: Math.floor((n - 1) / distinct) + 1 },
    ]);
    const mismatched = await rows(`SELECT u, lc FROM ${table} WHERE lc != if(u % ${distinct} = 0, '', concat('v', toString(u % ${distinct}))) LIMIT 3`);
    assert.deepEqual(mismatched, [], `${distinct} keys: every row's symbol is its own`);
  }
});

test('a value that does not fit drops its row only; misuse is a clear error', async () => {
  const ch = await open();
  const w = T.nativeWriter();
  T.write(w, ['keep-1', 'a', 'allow', 1, 1, 1, 1, 1, true]);
  assert.throws(
    () => T.write(w, ['dropped', 'long enough to matter', 'allow', -1, 1, 1, 1, 1, true]),
    (e: unknown) => e instanceof TsvEncodeError && /kinds\.u: expected an unsigned safe integer, got -1/.test(e.message) && e.column === 3,
  );
  assert.throws(() => T.write(w, ['dropped', 'b', 'allow', 2, 2, 2.5, 1, 1, true]), /kinds\.i: expected a safe integer, got 2\.5/);
  T.write(w, ['keep-2', 'c', 'deny', 3, 3, 3, 3, 3, false]);
  const body = w.finish();
  assert.equal(nativeBlockRows(body), 2);
  await ch.client.command({ query: DDL('dropped') });
  await ch.insertFormatted({ table: 'dropped', columns: T.columns, format: 'Native', body });
  assert.deepEqual(await rows('SELECT groupArray(s) AS s, groupArray(lc) AS lc FROM (SELECT s, lc FROM dropped ORDER BY u)'), [
    { s: ['keep-1', 'keep-2'], lc: ['a', 'c'] },
  ]);

  const bad = new NativeWriter([
    ['a', 'string'],
    ['n', 'uint'],
  ]);
  assert.throws(() => bad.uint(1), /uint\(\) on column 0, which is not one/);
  bad.string('x');
  assert.throws(() => bad.endRow(), /endRow\(\) after 1 of 2 fields/);
  assert.throws(() => bad.finish(), /unfinished row/);
  bad.abortRow();
  assert.equal(nativeBlockRows(bad.finish()), 0);
  assert.throws(() => new NativeWriter([]), /at least one column/);
  assert.ok(Number.isNaN(nativeBlockRows(new Uint8Array([5]))), 'a truncated header is NaN, not a guess');
});

test('Native inserts keep dedup tokens, and a truncated block is refused as ClickHouseError', async () => {
  const ch = await open();
  await ch.client.command({ query: DDL('dedup') });
  const insert = {
    table: 'dedup',
    columns: T.columns,
    format: 'Native',
    body: T.encodeNative(ROWS.slice(0, 3)),
    settings: { insert_deduplication_token: 'tok-n' },
  } as const;
  await ch.insertFormatted(insert);
  await ch.insertFormatted(insert);
  assert.deepEqual(await rows('SELECT count() AS n FROM dedup'), [{ n: 3 }]);
  await assert.rejects(
    ch.insertFormatted({ ...insert, body: insert.body.subarray(0, insert.body.byteLength - 3), settings: { insert_deduplication_token: 'tok-m' } }),
    (e: unknown) => e instanceof ClickHouseError && typeof e.code === 'string' && e.code !== '',
  );
  assert.deepEqual(await rows('SELECT count() AS n FROM dedup'), [{ n: 3 }], 'a refused block stores nothing');
});

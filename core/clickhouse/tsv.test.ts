import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { withClickHouse } from '../testing/clickhouseFixture.js';
import type { ClickHouseHandle } from './open.js';
import { encodeTsv, escapeTsvString, formatDateTime64, TsvEncodeError, TsvWriter } from './tsv.js';

const clickhouse = withClickHouse('towerwatch-tsv-');
let ch: ClickHouseHandle;
before(async () => {
  ch = await clickhouse.open('tsv_test');
});

let tableNo = 0;
async function table(columns: string): Promise<string> {
  const name = `t${++tableNo}`;
  await ch.client.command({ query: `CREATE TABLE ${ch.database}.${name} (${columns}) ENGINE = MergeTree ORDER BY tuple()` });
  return name;
}

async function insert(name: string, columns: string[], body: Buffer, settings: Record<string, string | number> = {}) {
  await ch.insertFormatted({
    table: name,
    columns,
    format: 'TabSeparated',
    body,
    settings: { date_time_input_format: 'basic', ...settings },
  });
}

async function select<T>(query: string): Promise<T[]> {
  return (await ch.client.query({ query, format: 'JSONEachRow' })).json<T>();
}

test('escapes exactly backslash, tab, LF, CR and NUL', () => {
  assert.equal(escapeTsvString('plain'), 'plain');
  assert.equal(escapeTsvString('a\tb\nc\rd\0e\\f'), 'a\\tb\\nc\\rd\\0e\\\\f');
  assert.equal(escapeTsvString(`'"\x01\x7f`), `'"\x01\x7f`);
  const w = new TsvWriter(4); // tiny: forces growth
  w.string('x\ty').string('é\n').uint(0).int(-12).endRow();
  w.string('').string('\\N').uint(9007199254740991).int(-9007199254740991).endRow();
  assert.equal(w.rows, 2);
  assert.equal(w.finish().toString('utf8'), 'x\\ty\té\\n\t0\t-12\n' + '\t\\\\N\t9007199254740991\t-9007199254740991\n');
  assert.equal(w.rows, 0);
});

test('DateTime64 text: seconds with milliseconds, a formatted date before 1970', () => {
  const w = new TsvWriter();
  w.dateTime64(0).dateTime64(1).dateTime64(1764000000123).dateTime64(5).dateTime64(-1).endRow();
  assert.equal(w.finish().toString(), '0.000\t0.001\t1764000000.123\t0.005\t1969-12-31 23:59:59.999\n');
  assert.equal(formatDateTime64(-2208988800000), '1900-01-01 00:00:00.000');
});

test('finish() hands over a buffer with its own ArrayBuffer (transferable)', () => {
  const w = new TsvWriter(16);
  w.string('a').endRow();
  const b = w.finish();
  assert.equal(b.byteOffset, 0);
  assert.ok(b.buffer.byteLength >= b.byteLength);
  assert.ok(b.buffer.byteLength < 8192, 'not a slice of the shared pool');
  const ab = b.buffer as ArrayBuffer;
  structuredClone(ab, { transfer: [ab] });
  assert.equal(ab.byteLength, 0, 'detached after transfer');
});

test('values that do not fit are rejected with their row and column', () => {
  assert.throws(
    () => encodeTsv([[1], [-1]], ['uint']),
    (e: unknown) => e instanceof TsvEncodeError && e.row === 1 && e.column === 0,
  );
  assert.throws(() => encodeTsv([[1.5]], ['uint']), TsvEncodeError);
  assert.throws(() => encodeTsv([[2 ** 53]], ['int']), TsvEncodeError);
  assert.throws(() => encodeTsv([['x']], ['datetime64ms']), TsvEncodeError);
  assert.throws(() => encodeTsv([[1, 2]], ['uint']), /row 0 has 2 values, expected 1/);
  assert.throws(() => encodeTsv([[{}]]), TsvEncodeError);
  const w = new TsvWriter();
  assert.throws(() => w.endRow(), /empty row/);
  w.string('half');
  assert.throws(() => w.finish(), /unfinished row/);
  w.abortRow();
  assert.equal(w.finish().length, 0);
});

test('nasty strings round-trip through ClickHouse exactly', async () => {
  const strings: string[] = [
    '',
    'plain ascii',
    'tab\there',
    'line\nfeed',
    'carriage\rreturn',
    'crlf\r\n',
    'nul\0byte',
    'back\\slash',
    '\\N',
    '\\t literal backslash-t',
    'trailing backslash\\',
    '\\',
    '\t',
    '\n',
    'single \' and double " quotes',
    '\b\f\v\x01\x1f\x7f',
    'é\t\\ after non-ASCII',
    'Zürich — Straße, 東京, Москва',
    '😀 emoji 👩‍👩‍👧 family',
    'e\u0301 combining',
    '\u2028\u2029 line separators',
    'x'.repeat(100_000) + '\t' + 'y'.repeat(1000),
  ];
  // Every ASCII code point on its own, between markers.
  for (let c = 0; c < 128; c++) strings.push(`<${String.fromCharCode(c)}>`);
  const name = await table('id UInt32, s String');
  const w = new TsvWriter(8);
  strings.forEach((s, i) => w.uint(i).string(s).endRow());
  await insert(name, ['id', 's'], w.finish());
  const rows = await select<{ id: number; s: string }>(`SELECT id, s FROM ${ch.database}.${name} ORDER BY id`);
  assert.equal(rows.length, strings.length);
  for (const r of rows) assert.equal(r.s, strings[r.id], `string #${r.id}`);
  // Byte-exact too (JSON output could hide a difference).
  const hex = await select<{ id: number; h: string }>(`SELECT id, hex(s) AS h FROM ${ch.database}.${name} ORDER BY id`);
  for (const r of hex)
    assert.equal(
      r.h,
      Buffer.from(strings[r.id] ?? '', 'utf8')
        .toString('hex')
        .toUpperCase(),
      `bytes of #${r.id}`,
    );
});

test('a lone surrogate becomes U+FFFD (UTF-8 cannot carry it)', async () => {
  const name = await table('s String');
  await insert(name, ['s'], encodeTsv([['a\uD800b']], ['string']));
  const rows = await select<{ s: string }>(`SELECT s FROM ${ch.database}.${name}`);
  assert.equal(rows[0]?.s, 'a\uFFFDb');
});

test('DateTime64(3) round-trips to the millisecond, 1900 to 2199', async () => {
  const values = [
    0, 1, 5, 999, 1000, 1001, 60_000, 999_999_999_999, 1_000_000_000_000, 1_764_000_000_123, 1_764_000_000_005, 4_102_444_800_999, 7_258_118_399_999, -1, -999,
    -1000, -1001, -2_208_988_800_000,
  ];
  const name = await table("id UInt32, ts DateTime64(3, 'UTC')");
  const w = new TsvWriter();
  values.forEach((ms, i) => w.uint(i).dateTime64(ms).endRow());
  await insert(name, ['id', 'ts'], w.finish());
  const rows = await select<{ id: number; ms: string }>(`SELECT id, toString(toUnixTimestamp64Milli(ts)) AS ms FROM ${ch.database}.${name} ORDER BY id`);
  assert.deepEqual(
    rows.map((r) => Number(r.ms)),
    values,
  );
  // Date objects take the same path.
  const name2 = await table("ts DateTime64(3, 'UTC')");
  await insert(name2, ['ts'], encodeTsv([[new Date(1_764_000_000_042)]]));
  assert.deepEqual(await select(`SELECT toString(toUnixTimestamp64Milli(ts)) AS ms FROM ${ch.database}.${name2}`), [{ ms: '1764000000042' }]);
});

test("chdb's default best_effort parsing misreads short timestamps (why inserts pin 'basic')", async () => {
  const name = await table("ts DateTime64(3, 'UTC')");
  const body = encodeTsv([[1001]], ['datetime64ms']); // "1.001"
  await assert.rejects(insert(name, ['ts'], body, { date_time_input_format: 'best_effort' }), /Cannot read DateTime|CANNOT_PARSE/);
  await insert(name, ['ts'], body, { date_time_input_format: 'basic' });
  assert.deepEqual(await select(`SELECT toString(toUnixTimestamp64Milli(ts)) AS ms FROM ${ch.database}.${name}`), [{ ms: '1001' }]);
});

test('integers (UInt64 to 2^64-1), floats, booleans and enums round-trip', async () => {
  const name = await table("id UInt32, u UInt64, i Int64, i32 Int32, f Float64, b Bool, e Enum8('allow' = 1, 'deny' = 2, 'unregistered' = 3)");
  const w = new TsvWriter();
  w.uint(0).uint(0).int(0).int(0).float(0).bool(false).string('allow').endRow();
  w.uint(1).uint(Number.MAX_SAFE_INTEGER).int(-Number.MAX_SAFE_INTEGER).int(-2147483648).float(0.1).bool(true).string('deny').endRow();
  w.uint(2).bigint(18446744073709551615n).bigint(-9223372036854775808n).int(2147483647).float(1e-7).bool(true).string('unregistered').endRow();
  w.uint(3).uint(4294967296).int(4294967296).int(-1).float(1.7976931348623157e308).bool(false).string('allow').endRow();
  w.uint(4)
    .uint(1e15 + 7)
    .int(-(1e15 + 7))
    .int(7)
    .float(-2.5e-300)
    .bool(false)
    .string('allow')
    .endRow();
  await insert(name, ['id', 'u', 'i', 'i32', 'f', 'b', 'e'], w.finish());
  const rows = await select<Record<string, unknown>>(`SELECT id, toString(u) AS u, toString(i) AS i, i32, f, b, e FROM ${ch.database}.${name} ORDER BY id`);
  assert.deepEqual(rows, [
    { id: 0, u: '0', i: '0', i32: 0, f: 0, b: false, e: 'allow' },
    { id: 1, u: '9007199254740991', i: '-9007199254740991', i32: -2147483648, f: 0.1, b: true, e: 'deny' },
    { id: 2, u: '18446744073709551615', i: '-9223372036854775808', i32: 2147483647, f: 1e-7, b: true, e: 'unregistered' },
    { id: 3, u: '4294967296', i: '4294967296', i32: -1, f: 1.7976931348623157e308, b: false, e: 'allow' },
    { id: 4, u: '1000000000000007', i: '-1000000000000007', i32: 7, f: -2.5e-300, b: false, e: 'allow' },
  ]);
});

test('NaN and infinities, and NULL by type inference', async () => {
  const name = await table('id UInt32, f Float64, s String, n Nullable(String)');
  const body = encodeTsv([
    [0, Number.NaN, null, null],
    [1, Number.POSITIVE_INFINITY, undefined, 'x'],
    [2, Number.NEGATIVE_INFINITY, 'ok', undefined],
  ]);
  await insert(name, ['id', 'f', 's', 'n'], body);
  const rows = await select<Record<string, unknown>>(`SELECT id, toString(f) AS f, s, n FROM ${ch.database}.${name} ORDER BY id`);
  // \N into a non-Nullable column takes the default (input_format_null_as_default).
  assert.deepEqual(rows, [
    { id: 0, f: 'nan', s: '', n: null },
    { id: 1, f: 'inf', s: '', n: 'x' },
    { id: 2, f: '-inf', s: 'ok', n: null },
  ]);
});

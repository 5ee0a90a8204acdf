/**
 * The row definitions (core/clickhouse/rows.ts) against the tables `migrate` builds: every
 * runtime table's insert columns, in order, with field kinds that fit the column types, and a
 * row of each written and read back.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { INSERT_SETTINGS, RECENT_TS, rows, usageRow, withClickHouse } from '../testing/clickhouseFixture.js';
import { encodeTsv, TsvEncodeError, TsvWriter, type TsvColumnType } from './tsv.js';
import { migrate } from './migrate.js';
import { APP_USAGE, DEAD_LETTERS, ROW_TABLES, VIOLATIONS, type AppUsageValues, type ColumnSpec, type RowTable } from './rows.js';

const clickhouse = withClickHouse('towerwatch-rows-');

/** The field kind a ClickHouse column type is written as. */
function kindOf(type: string): TsvColumnType | null {
  if (type === 'LowCardinality(String)') return 'symbol';
  const t = type;
  if (t === 'String' || t.startsWith('Enum')) return 'string';
  if (/^UInt(8|16|32|64)$/.test(t)) return 'uint';
  if (/^Int(8|16|32|64)$/.test(t)) return 'int';
  if (/^Float(32|64)$/.test(t)) return 'float';
  if (t.startsWith('DateTime64(3')) return 'datetime64ms';
  if (t === 'Bool') return 'bool';
  return null;
}

test('each runtime table is defined once, as migrate builds it: columns in order, kinds that fit, the rest defaulted', async () => {
  const h = await clickhouse.open('rows_ddl');
  await migrate(h, { retentionDays: 30 });
  const written = await rows<{ table: string }>(
    h,
    // policy_versions is the api's (api/policyVersions.ts), written as JSON objects.
    "SELECT name AS table FROM system.tables WHERE database = {db:String} AND name NOT IN ('schema_migrations', 'policy_versions') ORDER BY name",
    { db: h.database },
  );
  assert.deepEqual(
    written.map((t) => t.table),
    Object.keys(ROW_TABLES).sort(),
    'every table migrate builds has a row definition',
  );
  for (const def of Object.values(ROW_TABLES) as RowTable<readonly ColumnSpec[]>[]) {
    const ddl = await rows<{ name: string; type: string; default_kind: string }>(
      h,
      'SELECT name, type, default_kind FROM system.columns WHERE database = {db:String} AND table = {t:String} ORDER BY position',
      { db: h.database, t: def.table },
    );
    const columns = def.columns;
    assert.deepEqual(
      ddl.filter((c) => columns.includes(c.name)).map((c) => c.name),
      columns,
      `${def.table}: insert columns, in the table's order`,
    );
    assert.deepEqual(
      ddl.filter((c) => !columns.includes(c.name) && c.default_kind === '').map((c) => c.name),
      [],
      `${def.table}: columns left out have a default`,
    );
    for (const c of ddl.filter((x) => columns.includes(x.name))) {
      assert.equal(def.types[def.index(c.name)], kindOf(c.type), `${def.table}.${c.name} is ${c.type}`);
    }
  }
});

test('a row of each table, written by its definition as TabSeparated and as Native, reads back as written', async () => {
  const h = await clickhouse.open('rows_roundtrip');
  await migrate(h, { retentionDays: 30 });
  for (const def of Object.values(ROW_TABLES) as RowTable<readonly ColumnSpec[]>[]) {
    for (const format of ['TabSeparated', 'Native'] as const) {
      const sample = def.types.map((type, i): string | number | boolean => {
        const name = def.columns[i] as string;
        if (name === 'verdict') return 'deny';
        if (type === 'string' || type === 'symbol') return `${name}\tvalue ${i} ${format} é`;
        if (type === 'uint') return i + 1;
        if (type === 'int') return -(i + 1);
        if (type === 'datetime64ms') return RECENT_TS + i;
        if (type === 'float') return i + 0.5;
        return true;
      });
      const body = format === 'Native' ? def.encodeNative([sample]) : def.encode([sample]);
      await h.client.command({ query: `TRUNCATE TABLE ${h.database}.${def.table}` });
      await h.insertFormatted({ table: def.table, columns: def.columns, format, body, settings: INSERT_SETTINGS });
      const select = def.columns.map((c, i) =>
        def.types[i] === 'datetime64ms' ? `toUnixTimestamp64Milli(${c}) AS ${c}` : def.types[i] === 'string' ? `CAST(${c} AS String) AS ${c}` : c,
      );
      const back = await rows<Record<string, unknown>>(h, `SELECT ${select.join(', ')} FROM ${h.database}.${def.table}`);
      assert.equal(back.length, 1, `${def.table} ${format}`);
      assert.deepEqual(
        def.columns.map((c) => (typeof back[0]?.[c] === 'string' || typeof back[0]?.[c] === 'boolean' ? back[0][c] : Number(back[0]?.[c]))),
        sample,
        `${def.table} ${format}`,
      );
    }
  }
});

test('row writers agree with encodeTsv over the column types', () => {
  const row = usageRow({ user_name: 'tab\there', ts: 1_764_000_000_007 });
  const w = new TsvWriter();
  APP_USAGE.writeRow(w, row);
  assert.deepEqual(w.finish(), encodeTsv([APP_USAGE.columns.map((c) => row[c])], APP_USAGE.types));
  const wd = new TsvWriter();
  DEAD_LETTERS.writeRow(wd, {
    ts: 5,
    stream: 'USAGE',
    subject: 'usage.att.t1',
    stream_seq: 3,
    code: 'bad_frame',
    message: 'x',
    event_index: -1,
    payload_base64: 'AA==',
    rejected_count: 1,
    rejections: '[]',
    payload_bytes: 1,
    payload_truncated: false,
  });
  assert.equal(wd.finish().toString(), '0.005\tUSAGE\tusage.att.t1\t3\tbad_frame\tx\t-1\tAA==\t1\t[]\t1\t0\n');
});

test('positional values and rows by name write the same bytes; a bad value names its row and column', () => {
  const row = usageRow({ event_id: 42 });
  const values: AppUsageValues = APP_USAGE.values(row);
  assert.equal(values[APP_USAGE.index('event_id')], 42);
  assert.deepEqual(APP_USAGE.encode([values, values]), APP_USAGE.encodeRows([row, row]));
  const bad = APP_USAGE.values(usageRow({ bytes_up: -1 }));
  assert.throws(
    () => APP_USAGE.encode([values, bad]),
    (err: unknown) => err instanceof TsvEncodeError && err.row === 1 && err.column === APP_USAGE.index('bytes_up') && /app_usage\.bytes_up/.test(err.message),
  );
  assert.equal(VIOLATIONS.index('stream_seq'), 8);
});

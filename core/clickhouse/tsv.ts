/**
 * A fast encoder of ClickHouse `TabSeparated` rows, for the insert hot path (it runs inside
 * worker threads). Rows are written straight into one growing byte buffer: ASCII strings byte
 * by byte in the same pass that escapes them, numbers digit by digit, so no per-field string,
 * regex or native call is made in the common case.
 *
 * Escaping follows ClickHouse's TSV input rules
 * (https://clickhouse.com/docs/interfaces/formats/TabSeparated#data-formatting): a backslash,
 * tab, line feed, carriage return and NUL inside a string are written as `\\`, `\t`, `\n`,
 * `\r`, `\0`; every other character, quotes and other control characters included, is read
 * back verbatim. Strings are UTF-8; a lone UTF-16 surrogate becomes U+FFFD (UTF-8 cannot hold it).
 *
 * `DateTime64(3)` values are given as epoch milliseconds and written as `<seconds>.<mmm>`
 * (e.g. `1764000000.123`). ClickHouse reads that exactly under both values of
 * `date_time_input_format`, but under `best_effort` (chdb's default) a number shorter than
 * 9 digits is taken for a date (`1.001` is rejected, `1000` is the year 1000): inserts should
 * pin `date_time_input_format = 'basic'`, as `ClickHouseSink` does. A negative value (before
 * 1970) is written as `YYYY-MM-DD hh:mm:ss.mmm`, which both modes read.
 */
import { CodedError } from '../codedError.js';

/**
 * Column kinds understood by {@link encodeTsv} and {@link TsvWriter.value}. `symbol` is a
 * string with few distinct values (a `LowCardinality(String)` column): TSV writes it as any
 * string, the Native encoder as a dictionary and indexes.
 */
export const TSV_COLUMN_TYPES = ['string', 'symbol', 'uint', 'int', 'float', 'datetime64ms', 'bool'] as const;
export type TsvColumnType = (typeof TSV_COLUMN_TYPES)[number];

/** Initial buffer size of a {@link TsvWriter}. @default 64 KiB */
export const DEFAULT_TSV_INITIAL_CAPACITY = 64 * 1024;

const TAB = 9;
const LF = 10;
const BACKSLASH = 92;
/** Bytes a number field can take at most: `-9007199254740991` or `9007199254740991.999`. */
const MAX_NUMBER_BYTES = 24;

/** A value that cannot be written in the column's type. */
export class TsvEncodeError extends CodedError<'tsv_invalid_value'> {
  /** Row index (0-based) within the batch, when known. */
  readonly row: number;
  /** Column index (0-based) within the row, when known. */
  readonly column: number;
  constructor(message: string, row = -1, column = -1, options?: ErrorOptions) {
    super('tsv_invalid_value', message, options);
    this.row = row;
    this.column = column;
  }
}

/** Escapes a string for a TSV field (slow path, for strings with non-ASCII characters). */
export function escapeTsvString(s: string): string {
  let out = '';
  let from = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > BACKSLASH || (c > 13 && c !== BACKSLASH)) continue;
    let rep: string;
    if (c === BACKSLASH) rep = '\\\\';
    else if (c === TAB) rep = '\\t';
    else if (c === LF) rep = '\\n';
    else if (c === 13) rep = '\\r';
    else if (c === 0) rep = '\\0';
    else continue;
    out += s.slice(from, i) + rep;
    from = i + 1;
  }
  return from === 0 ? s : out + s.slice(from);
}

/**
 * Appends TSV fields to a growing buffer. Each field method writes its value followed by a
 * tab; {@link endRow} turns the last tab into a line feed. Call the methods in the table's
 * column order (e.g. `APP_USAGE.columns`, core/clickhouse/rows.ts).
 *
 * ```ts
 * const w = new TsvWriter();
 * for (const e of events) w.string(e.enterprise).dateTime64(e.ts).uint(e.event_id).endRow();
 * const body = w.finish(); // transferable: owns its ArrayBuffer
 * ```
 */
export class TsvWriter {
  #buf: Buffer;
  #pos = 0;
  #rowStart = 0;
  #rows = 0;
  readonly #initialCapacity: number;

  constructor(initialCapacity: number = DEFAULT_TSV_INITIAL_CAPACITY) {
    if (!Number.isInteger(initialCapacity) || initialCapacity < 1) {
      throw new RangeError('initialCapacity must be a positive integer');
    }
    this.#initialCapacity = initialCapacity;
    this.#buf = Buffer.allocUnsafeSlow(initialCapacity);
  }

  /** Rows ended so far (since construction or the last {@link finish}). */
  get rows(): number {
    return this.#rows;
  }

  /** Bytes written so far. */
  get byteLength(): number {
    return this.#pos;
  }

  #grow(extra: number): void {
    const next = Buffer.allocUnsafeSlow(Math.max(this.#buf.length * 2, this.#pos + extra));
    this.#buf.copy(next, 0, 0, this.#pos);
    this.#buf = next;
  }

  /** A LowCardinality(String) field: written as any string. */
  symbol(s: string): this {
    return this.string(s);
  }

  /** A String / LowCardinality(String) / Enum (by name) field. */
  string(s: string): this {
    const len = s.length;
    // Worst case: every UTF-16 unit becomes 3 UTF-8 bytes (escapes take 2), plus the tab.
    if (this.#pos + len * 3 + 1 > this.#buf.length) this.#grow(len * 3 + 1);
    const b = this.#buf;
    let p = this.#pos;
    for (let i = 0; i < len; i++) {
      const c = s.charCodeAt(i);
      if (c > BACKSLASH) {
        if (c < 128) {
          b[p++] = c;
          continue;
        }
        // Non-ASCII: hand the whole field to the native UTF-8 writer.
        p = this.#pos;
        p += b.write(escapeTsvString(s), p, 'utf8');
        break;
      }
      if (c > 13 && c !== BACKSLASH) {
        b[p++] = c;
      } else if (c === BACKSLASH) {
        b[p++] = BACKSLASH;
        b[p++] = BACKSLASH;
      } else if (c === TAB) {
        b[p++] = BACKSLASH;
        b[p++] = 116; // t
      } else if (c === LF) {
        b[p++] = BACKSLASH;
        b[p++] = 110; // n
      } else if (c === 13) {
        b[p++] = BACKSLASH;
        b[p++] = 114; // r
      } else if (c === 0) {
        b[p++] = BACKSLASH;
        b[p++] = 48; // 0
      } else {
        b[p++] = c;
      }
    }
    b[p++] = TAB;
    this.#pos = p;
    return this;
  }

  /** A UInt8…UInt64 field from a safe integer ≥ 0 (use {@link bigint} above 2^53). */
  uint(n: number): this {
    if (!(n >= 0 && n <= Number.MAX_SAFE_INTEGER && Math.floor(n) === n)) {
      throw new TsvEncodeError(`expected an unsigned safe integer, got ${String(n)}`);
    }
    if (this.#pos + MAX_NUMBER_BYTES > this.#buf.length) this.#grow(MAX_NUMBER_BYTES);
    this.#pos = writeUint(this.#buf, this.#pos, n);
    this.#buf[this.#pos++] = TAB;
    return this;
  }

  /** An Int8…Int64 field from a safe integer. */
  int(n: number): this {
    if (!(Math.abs(n) <= Number.MAX_SAFE_INTEGER && Math.floor(n) === n)) {
      throw new TsvEncodeError(`expected a safe integer, got ${String(n)}`);
    }
    if (this.#pos + MAX_NUMBER_BYTES > this.#buf.length) this.#grow(MAX_NUMBER_BYTES);
    let p = this.#pos;
    if (n < 0) {
      this.#buf[p++] = 45; // -
      n = -n;
    }
    p = writeUint(this.#buf, p, n);
    this.#buf[p++] = TAB;
    this.#pos = p;
    return this;
  }

  /** A (U)Int64/128/256 field from a bigint. */
  bigint(n: bigint): this {
    return this.#ascii(n.toString());
  }

  /** A Float32/Float64 field; NaN and ±Infinity as ClickHouse writes them (`nan`, `inf`, `-inf`). */
  float(n: number): this {
    if (Number.isInteger(n) && Math.abs(n) <= Number.MAX_SAFE_INTEGER) return this.int(n);
    return this.#ascii(Number.isNaN(n) ? 'nan' : n === Infinity ? 'inf' : n === -Infinity ? '-inf' : String(n));
  }

  /** A Bool / UInt8 field: `1` or `0`. */
  bool(v: boolean): this {
    if (this.#pos + 2 > this.#buf.length) this.#grow(2);
    this.#buf[this.#pos++] = v ? 49 : 48;
    this.#buf[this.#pos++] = TAB;
    return this;
  }

  /** A DateTime64(3) field from epoch milliseconds (a safe integer). */
  dateTime64(ms: number): this {
    if (!(Math.abs(ms) <= Number.MAX_SAFE_INTEGER && Math.floor(ms) === ms)) {
      throw new TsvEncodeError(`expected epoch milliseconds as a safe integer, got ${String(ms)}`);
    }
    if (ms < 0) return this.#ascii(formatDateTime64(ms));
    if (this.#pos + MAX_NUMBER_BYTES > this.#buf.length) this.#grow(MAX_NUMBER_BYTES);
    const b = this.#buf;
    const seconds = Math.floor(ms / 1000);
    const frac = ms - seconds * 1000;
    const p = writeUint(b, this.#pos, seconds);
    const hundreds = (frac / 100) | 0;
    const rest = frac - hundreds * 100;
    const tens = (rest / 10) | 0;
    b[p] = 46; // .
    b[p + 1] = 48 + hundreds;
    b[p + 2] = 48 + tens;
    b[p + 3] = 48 + rest - tens * 10;
    b[p + 4] = TAB;
    this.#pos = p + 5;
    return this;
  }

  /** `\N`: NULL, for Nullable columns only. */
  null(): this {
    return this.#ascii('\\N');
  }

  /** Writes `v` as a field of `type` (the generic path of {@link encodeTsv}). */
  value(v: unknown, type: TsvColumnType): this {
    switch (type) {
      case 'string':
      case 'symbol':
        return this.string(typeof v === 'string' ? v : v === null || v === undefined ? '' : String(v));
      case 'uint':
        return typeof v === 'bigint' ? this.bigint(v) : this.uint(toNumber(v));
      case 'int':
        return typeof v === 'bigint' ? this.bigint(v) : this.int(toNumber(v));
      case 'float':
        return this.float(toNumber(v));
      case 'datetime64ms':
        return this.dateTime64(v instanceof Date ? v.getTime() : toNumber(v));
      case 'bool':
        return this.bool(Boolean(v));
    }
  }

  /** Writes `v` by its JavaScript type (string, number, bigint, boolean, Date, null → `\N`). */
  auto(v: unknown): this {
    switch (typeof v) {
      case 'string':
        return this.string(v);
      case 'number':
        return this.float(v);
      case 'bigint':
        return this.bigint(v);
      case 'boolean':
        return this.bool(v);
      case 'undefined':
        return this.null();
      default:
        if (v === null) return this.null();
        if (v instanceof Date) return this.dateTime64(v.getTime());
        throw new TsvEncodeError(`cannot write a ${typeof v} as a TSV field`);
    }
  }

  /** Ends the row: its last tab becomes a line feed. A row without fields is an error. */
  endRow(): this {
    if (this.#pos === this.#rowStart) throw new TsvEncodeError('endRow() on an empty row');
    this.#buf[this.#pos - 1] = LF;
    this.#rowStart = this.#pos;
    this.#rows++;
    return this;
  }

  /** Drops the fields of an unfinished row (e.g. after an encode error). */
  abortRow(): this {
    this.#pos = this.#rowStart;
    return this;
  }

  /**
   * The encoded rows. The returned Buffer owns its ArrayBuffer (never a slice of Node's shared
   * pool), so it can be transferred to another thread; the writer starts afresh.
   */
  finish(): Buffer {
    if (this.#pos !== this.#rowStart) throw new TsvEncodeError('finish() with an unfinished row');
    const out = this.#buf.subarray(0, this.#pos);
    this.#buf = Buffer.allocUnsafeSlow(this.#initialCapacity);
    this.#pos = 0;
    this.#rowStart = 0;
    this.#rows = 0;
    return out;
  }

  #ascii(s: string): this {
    const len = s.length;
    if (this.#pos + len + 1 > this.#buf.length) this.#grow(len + 1);
    const b = this.#buf;
    let p = this.#pos;
    for (let i = 0; i < len; i++) b[p++] = s.charCodeAt(i);
    b[p++] = TAB;
    this.#pos = p;
    return this;
  }
}

/**
 * Encodes rows as TabSeparated. With `types` (one per column, e.g. derived from the table's
 * column list) each value is checked and written as that type; without, by its JavaScript
 * type: numbers as numbers, `Date` as DateTime64(3), `null`/`undefined` as `\N`.
 * @throws {TsvEncodeError} naming the row and column of a value that does not fit.
 */
export function encodeTsv(rows: readonly (readonly unknown[])[], types?: readonly TsvColumnType[]): Buffer {
  const w = new TsvWriter(Math.max(DEFAULT_TSV_INITIAL_CAPACITY, rows.length * 128));
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r] as readonly unknown[];
    if (types !== undefined && row.length !== types.length) {
      throw new TsvEncodeError(`row ${r} has ${row.length} values, expected ${types.length}`, r);
    }
    let c = 0;
    try {
      for (; c < row.length; c++) {
        if (types === undefined) w.auto(row[c]);
        else w.value(row[c], types[c] as TsvColumnType);
      }
    } catch (err) {
      if (err instanceof TsvEncodeError) {
        throw new TsvEncodeError(`row ${r}, column ${c}: ${err.message}`, r, c, { cause: err });
      }
      throw err;
    }
    w.endRow();
  }
  return w.finish();
}

/** `YYYY-MM-DD hh:mm:ss.mmm` (UTC) for epoch milliseconds; ClickHouse reads it in every mode. */
export function formatDateTime64(ms: number): string {
  const iso = new Date(ms).toISOString(); // 1969-12-31T23:59:59.999Z (or ±YYYYYY-… out of range)
  return `${iso.slice(0, -14)} ${iso.slice(-13, -1)}`;
}

function toNumber(v: unknown): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && v.trim() !== '') return Number(v);
  if (typeof v === 'boolean') return v ? 1 : 0;
  return Number.NaN;
}

/** Writes the decimal digits of a safe integer ≥ 0 at `p`; returns the position after them. */
function writeUint(b: Buffer, p: number, n: number): number {
  if (n < 4294967296) return writeUint32(b, p, n >>> 0);
  // Split so that both halves fit the 32-bit fast path; the low half is zero-padded to 9 digits.
  const hi = Math.floor(n / 1e9);
  let lo = (n - hi * 1e9) >>> 0;
  p = writeUint32(b, p, hi >>> 0);
  let q = p + 9;
  for (let k = 0; k < 9; k++) {
    const m = (lo / 10) >>> 0;
    b[--q] = 48 + lo - m * 10;
    lo = m;
  }
  return p + 9;
}

function writeUint32(b: Buffer, p: number, n: number): number {
  const digits =
    n < 10 ? 1 : n < 100 ? 2 : n < 1000 ? 3 : n < 10000 ? 4 : n < 100000 ? 5 : n < 1000000 ? 6 : n < 10000000 ? 7 : n < 100000000 ? 8 : n < 1000000000 ? 9 : 10;
  let q = p + digits;
  while (n >= 10) {
    const m = (n / 10) >>> 0;
    b[--q] = 48 + n - m * 10;
    n = m;
  }
  b[q - 1] = 48 + n;
  return p + digits;
}

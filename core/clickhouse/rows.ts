/**
 * The rows towerwatch writes to ClickHouse at runtime, one definition per table: its columns in
 * insert order, each with the kind of TSV field it is written as. The insert column list, the
 * row types (by name, and positional for the hot path) and the TSV writers all derive from that
 * one list; rows.test.ts checks it against the tables `migrate` builds (migrations.ts).
 *
 * The pipeline's workers build positional values (one array per event, no object) and write
 * them with {@link RowTable.write}; code off the hot path writes rows by name with
 * {@link RowTable.writeRow}. Both go through `ClickHouseSink` as TabSeparated.
 */
import type { Remediation, Severity } from '../domain.js';
import { NativeWriter, type RowWriter } from './native.js';
import { TsvEncodeError, TsvWriter, type TsvColumnType } from './tsv.js';

export const VERDICTS = ['allow', 'deny', 'unregistered'] as const;
export type Verdict = (typeof VERDICTS)[number];

/** A column: its name, and how its value is written (which fixes the value's JavaScript type). */
export type ColumnSpec = readonly [name: string, type: TsvColumnType];

type ValueOf<T extends TsvColumnType> = T extends 'string' | 'symbol' ? string : T extends 'bool' ? boolean : number;

/** A row as positional values, in insert order. */
export type ValuesOf<S extends readonly ColumnSpec[]> = { -readonly [K in keyof S]: S[K] extends ColumnSpec ? ValueOf<S[K][1]> : never };
/** A row by column name. */
export type RowOf<S extends readonly ColumnSpec[]> = { [C in S[number] as C[0]]: ValueOf<C[1]> };
/** Column names in insert order. */
export type ColumnsOf<S extends readonly ColumnSpec[]> = { readonly [K in keyof S]: S[K] extends ColumnSpec ? S[K][0] : never };

type SpecOf<T> = T extends RowTable<infer S> ? S : never;
/** A table's row as positional values: `RowValues<typeof APP_USAGE>`. */
export type RowValues<T> = ValuesOf<SpecOf<T>>;
/** A table's row by column name: `RowObject<typeof APP_USAGE>`. */
export type RowObject<T> = RowOf<SpecOf<T>>;

// Field kinds as small integers: the write loop switches on them.
const KIND: Readonly<Record<TsvColumnType, number>> = { string: 0, uint: 1, int: 2, float: 3, datetime64ms: 4, bool: 5, symbol: 6 };

/** One table's row definition and its writers. */
export class RowTable<const S extends readonly ColumnSpec[]> {
  readonly table: string;
  /** Insert columns, in order (columns with a default, such as `ingested_at`, are left out). */
  readonly columns: ColumnsOf<S>;
  /** TSV kind of each column, in order. */
  readonly types: readonly TsvColumnType[];
  readonly #kinds: Uint8Array;
  readonly #spec: S;

  constructor(table: string, spec: S) {
    this.table = table;
    this.#spec = spec;
    this.columns = Object.freeze(spec.map(([name]) => name)) as unknown as ColumnsOf<S>;
    this.types = Object.freeze(spec.map(([, type]) => type));
    this.#kinds = Uint8Array.from(this.types, (t) => KIND[t]);
  }

  /** Position of a column in the values. */
  index(column: S[number][0]): number {
    return (this.columns as readonly string[]).indexOf(column);
  }

  /**
   * Appends one row given positionally: the hot path (no allocation, one switch per field).
   * @throws {TsvEncodeError} naming the column of a value that does not fit (the row is dropped).
   */
  write(w: RowWriter, values: ValuesOf<S>): void {
    const kinds = this.#kinds;
    const v = values as readonly unknown[];
    let i = 0;
    try {
      for (; i < kinds.length; i++) {
        switch (kinds[i]) {
          case 0:
            w.string(v[i] as string);
            break;
          case 1:
            w.uint(v[i] as number);
            break;
          case 2:
            w.int(v[i] as number);
            break;
          case 3:
            w.float(v[i] as number);
            break;
          case 4:
            w.dateTime64(v[i] as number);
            break;
          case 6:
            w.symbol(v[i] as string);
            break;
          default:
            w.bool(v[i] as boolean);
        }
      }
    } catch (err) {
      w.abortRow();
      const column = `${this.table}.${String(this.columns[i])}`;
      throw new TsvEncodeError(`${column}: ${err instanceof Error ? err.message : String(err)}`, -1, i, { cause: err });
    }
    w.endRow();
  }

  /** A writer of this table's rows as one Native block (the pipeline's hot path). */
  nativeWriter(expectedRows?: number): NativeWriter {
    return new NativeWriter(this.#spec, expectedRows);
  }

  /** The positional values of a row given by name. */
  values(row: RowOf<S>): ValuesOf<S> {
    const r = row as Readonly<Record<string, unknown>>;
    return (this.columns as readonly string[]).map((c) => r[c]) as ValuesOf<S>;
  }

  /** Appends one row given by column name (off the hot path: tests, discovery, remediation). */
  writeRow(w: RowWriter, row: RowOf<S>): void {
    this.write(w, this.values(row));
  }

  /**
   * TabSeparated body of positional rows.
   * @throws {TsvEncodeError} naming the row and column of a value that does not fit.
   */
  encode(rows: readonly ValuesOf<S>[]): Buffer {
    // ~160 bytes make an app_usage row: room for them without growing the buffer.
    return this.#writeAll(new TsvWriter(Math.max(1024, rows.length * 192)), rows).finish();
  }

  /**
   * Native body (one block) of positional rows; `writer` (this table's, reused block after
   * block as a worker does) saves allocating its columns.
   * @throws {TsvEncodeError} naming the row and column of a value that does not fit.
   */
  encodeNative(rows: readonly ValuesOf<S>[], writer?: NativeWriter): Buffer {
    return this.#writeAll(writer?.reset() ?? this.nativeWriter(rows.length), rows).finish();
  }

  #writeAll<W extends RowWriter>(w: W, rows: readonly ValuesOf<S>[]): W {
    for (let r = 0; r < rows.length; r++) {
      try {
        this.write(w, rows[r] as ValuesOf<S>);
      } catch (err) {
        if (err instanceof TsvEncodeError) throw new TsvEncodeError(`row ${r}, ${err.message}`, r, err.column, { cause: err });
        throw err;
      }
    }
    return w;
  }

  /** TabSeparated body of rows given by name. */
  encodeRows(rows: readonly RowOf<S>[]): Buffer {
    return this.encode(rows.map((r) => this.values(r)));
  }
}

// ---------------------------------------------------------------------------------------------
// The tables. Timestamps are epoch milliseconds.

/** One event with its verdict. */
export const APP_USAGE = new RowTable('app_usage', [
  ['enterprise_id', 'symbol'], // '' when the device is unknown (verdict `unregistered`)
  ['ts', 'datetime64ms'],
  ['carrier', 'symbol'],
  ['tower_id', 'symbol'],
  ['event_id', 'uint'],
  ['stream_seq', 'uint'], // JetStream sequence of the message the event came in
  ['device_id', 'string'],
  ['user_id', 'string'],
  ['user_name', 'string'],
  ['app_id', 'symbol'],
  ['app_name', 'symbol'],
  ['app_category', 'symbol'],
  ['action_id', 'symbol'],
  ['action_name', 'symbol'],
  ['bytes_up', 'uint'],
  ['bytes_down', 'uint'],
  ['verdict', 'string'],
  ['policy_id', 'string'], // '' when no policy decided (unregistered device)
  ['policy_name', 'string'],
  ['rule_id', 'string'], // '' when the policy's default decided
  ['severity', 'symbol'],
  ['remediation', 'symbol'],
  ['policy_version', 'symbol'],
  // What the evaluator saw besides the columns above (schema 9): the owner's role ids joined by
  // ',', the tower's region, the device's OS and version; decision_inputs 1 when they are here.
  ['role_ids', 'symbol'],
  ['region', 'symbol'],
  ['os', 'symbol'],
  ['os_version', 'symbol'],
  ['decision_inputs', 'uint'],
  // What the enterprise's shadow-mode policies and rules would have decided (schema 10): the
  // verdict of every policy and rule as if enforced; '' when nothing is in shadow mode.
  ['shadow_verdict', 'symbol'],
  ['shadow_policy_id', 'string'],
  ['shadow_rule_id', 'string'],
]);
export type AppUsageValues = RowValues<typeof APP_USAGE>;
export interface AppUsageRow extends RowObject<typeof APP_USAGE> {
  verdict: Verdict;
  severity: Severity | '';
  remediation: Remediation | '';
}

/** A denied event. `alert_id` is `<carrier>:<tower>:<event_id>`. */
export const VIOLATIONS = new RowTable('violations', [
  ['alert_id', 'string'],
  ['enterprise_id', 'symbol'],
  ['ts', 'datetime64ms'],
  ['carrier', 'symbol'],
  ['tower_id', 'symbol'],
  ['tower_location', 'string'],
  ['region', 'symbol'],
  ['event_id', 'uint'],
  ['stream_seq', 'uint'],
  ['device_id', 'string'],
  ['user_id', 'string'],
  ['user_name', 'string'],
  ['app_id', 'symbol'],
  ['app_name', 'symbol'],
  ['action_id', 'symbol'],
  ['action_name', 'symbol'],
  ['policy_id', 'string'],
  ['policy_name', 'string'],
  ['rule_id', 'string'],
  ['severity', 'symbol'],
  ['remediation', 'symbol'],
  ['policy_version', 'symbol'],
]);
export type ViolationValues = RowValues<typeof VIOLATIONS>;
export interface ViolationRow extends RowObject<typeof VIOLATIONS> {
  severity: Severity | '';
  remediation: Remediation | '';
}

/**
 * A message (event_index -1) or one event of it that could not be processed. Schema 6: one row
 * per dead-lettered message. `code`, `message` and `event_index` are its first reason;
 * `rejected_count` counts all of them, `rejections` is a JSON list of the first few
 * (`{ index, code, message, event_id? }`); rows written before schema 6 are one per rejection,
 * with `rejected_count` 1 and `rejections` ''.
 */
export const DEAD_LETTERS = new RowTable('dead_letters', [
  ['ts', 'datetime64ms'], // when it was dead-lettered
  ['stream', 'symbol'],
  ['subject', 'string'],
  ['stream_seq', 'uint'],
  ['code', 'symbol'],
  ['message', 'string'],
  ['event_index', 'int'],
  ['payload_base64', 'string'], // the message's bytes (the first DEAD_LETTER_MAX_PAYLOAD_BYTES of them)
  ['rejected_count', 'uint'],
  ['rejections', 'string'],
  ['payload_bytes', 'uint'], // size of the original message
  ['payload_truncated', 'bool'], // payload_base64 holds less than the message
]);
export type DeadLetterRow = RowObject<typeof DEAD_LETTERS>;

/**
 * Every discovery report (schema 5). `enterprise_id` is the registry's owner of the device, else
 * the enterprise the carrier reported, else '' (a consumer SIM); `reported_enterprise` keeps
 * what the carrier said.
 */
export const DISCOVERY_SIGHTINGS = new RowTable('discovery_sightings', [
  ['enterprise_id', 'symbol'],
  ['device_id', 'string'],
  ['ts', 'datetime64ms'],
  ['carrier', 'symbol'],
  ['tower_id', 'symbol'],
  ['model', 'symbol'],
  ['os', 'symbol'],
  ['os_version', 'symbol'],
  ['first_seen', 'bool'],
  ['reported_enterprise', 'symbol'],
  ['outcome', 'symbol'],
  ['stream_seq', 'uint'],
  ['report_index', 'uint'],
]);
export type DiscoverySightingRow = RowObject<typeof DISCOVERY_SIGHTINGS>;

/** Every outcome of a block/unblock command (schema 4). */
export const REMEDIAL_ACTIONS = new RowTable('remedial_actions', [
  ['action_id', 'string'],
  ['alert_id', 'string'],
  ['enterprise_id', 'symbol'],
  ['device_id', 'string'],
  ['tower_id', 'symbol'],
  ['carrier', 'symbol'],
  ['app_id', 'symbol'],
  ['action', 'symbol'],
  ['trigger', 'symbol'],
  ['status', 'symbol'],
  ['attempts', 'uint'],
  ['reason', 'string'],
  ['requested_by', 'string'],
  ['requested_at', 'datetime64ms'],
  ['executed_at', 'datetime64ms'],
  ['stream_seq', 'uint'],
]);
export type RemedialActionRow = RowObject<typeof REMEDIAL_ACTIONS>;

/** Every table written at runtime, by name. */
export const ROW_TABLES = {
  app_usage: APP_USAGE,
  violations: VIOLATIONS,
  dead_letters: DEAD_LETTERS,
  discovery_sightings: DISCOVERY_SIGHTINGS,
  remedial_actions: REMEDIAL_ACTIONS,
} as const;
export type InsertTable = keyof typeof ROW_TABLES;

export function isInsertTable(table: string): table is InsertTable {
  return Object.hasOwn(ROW_TABLES, table);
}

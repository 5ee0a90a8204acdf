/**
 * The ClickHouse schema of towerwatch and its migrations, applied idempotently at start by
 * {@link migrate}: ordered, numbered migrations recorded in `schema_migrations`, then the
 * retention TTL reconciled with the configured days.
 *
 * Layout, for the dashboard's queries (always one enterprise and a time range):
 * - raw tables `app_usage` and `violations`: PARTITION BY day, ORDER BY (enterprise_id, ts, …),
 *   so a range query reads only that enterprise's granules of those days, newest-first lists
 *   read in key order, and retention drops whole day-parts (`ttl_only_drop_parts`);
 *   drill-downs by device, user or alert use skip indexes; `stream_seq` has a minmax index
 *   for the redelivery check ({@link storedSeqsQuery}).
 * - per-minute rollups as aggregate projections of the raw tables (`per_minute` on both, and
 *   `device_days` on app_usage for the devices' sightings): a projection is written into the
 *   same data part as the rows it sums, so it is exact whatever is killed when (a materialized
 *   view commits a part of its own, and a crash in between leaves it short), and it is
 *   deduplicated with them. Dashboards read thousands of rows instead of millions when a query
 *   groups by and filters on the projection's keys only: `toStartOfMinute(ts)`, not `ts`
 *   (see {@link PER_MINUTE}); `force_optimize_projection = 1` turns a miss into an error.
 * - every table keeps the last 1000 insert tokens (`non_replicated_deduplication_window`) so
 *   that a retried batch with the same `insert_deduplication_token` is dropped, projections and
 *   all.
 */
import { ClickHouseOpenError, ClickHouseErrorCode, type ClickHouseHandle } from './clickhouse.js';
import type { Remediation, Severity } from './domain.js';
import { MAX_RETENTION_DAYS } from './config.js';
import type { TsvColumnType, TsvWriter } from './tsv.js';

/** Insert tokens remembered per table. */
export const DEDUPLICATION_WINDOW = 1000;

export const VERDICTS = ['allow', 'deny', 'unregistered'] as const;
export type Verdict = (typeof VERDICTS)[number];

// ---------------------------------------------------------------------------------------------
// Rows and their insert column order

/** One event with its verdict. Timestamps are epoch milliseconds. */
export interface AppUsageRow {
  /** '' when the device is unknown (verdict `unregistered`). */
  enterprise_id: string;
  ts: number;
  carrier: string;
  tower_id: string;
  event_id: number;
  /** JetStream sequence of the message the event came in. */
  stream_seq: number;
  device_id: string;
  user_id: string;
  user_name: string;
  app_id: string;
  app_name: string;
  app_category: string;
  action_id: string;
  action_name: string;
  bytes_up: number;
  bytes_down: number;
  verdict: Verdict;
  /** '' when no policy decided (unregistered device). */
  policy_id: string;
  policy_name: string;
  /** '' when the policy's default decided. */
  rule_id: string;
  severity: Severity | '';
  remediation: Remediation | '';
  policy_version: string;
}

/** A denied event. `alert_id` is `<carrier>:<tower>:<event_id>`. */
export interface ViolationRow {
  alert_id: string;
  enterprise_id: string;
  ts: number;
  carrier: string;
  tower_id: string;
  tower_location: string;
  region: string;
  event_id: number;
  stream_seq: number;
  device_id: string;
  user_id: string;
  user_name: string;
  app_id: string;
  app_name: string;
  action_id: string;
  action_name: string;
  policy_id: string;
  policy_name: string;
  rule_id: string;
  severity: Severity | '';
  remediation: Remediation | '';
  policy_version: string;
}

/** A message (event_index -1) or one event of it that could not be processed. */
export interface DeadLetterRow {
  /** When it was dead-lettered (epoch ms). */
  ts: number;
  stream: string;
  subject: string;
  stream_seq: number;
  code: string;
  message: string;
  event_index: number;
  /** The message's bytes (the first DEAD_LETTER_MAX_PAYLOAD_BYTES of them), base64. */
  payload_base64: string;
  /**
   * Schema 6: one row per dead-lettered message. `code`, `message` and `event_index` are its
   * first reason; `rejected_count` counts all of them, `rejections` is a JSON list of the first
   * few (`{ index, code, message, event_id? }`); rows written before schema 6 are one per
   * rejection, with `rejected_count` 1 and `rejections` ''.
   */
  rejected_count: number;
  rejections: string;
  /** Size of the original message; `payload_truncated` when payload_base64 holds less. */
  payload_bytes: number;
  payload_truncated: boolean;
}

/** Columns of app_usage in insert order (all but `ingested_at`, which defaults to now). */
export const APP_USAGE_COLUMNS = [
  'enterprise_id',
  'ts',
  'carrier',
  'tower_id',
  'event_id',
  'stream_seq',
  'device_id',
  'user_id',
  'user_name',
  'app_id',
  'app_name',
  'app_category',
  'action_id',
  'action_name',
  'bytes_up',
  'bytes_down',
  'verdict',
  'policy_id',
  'policy_name',
  'rule_id',
  'severity',
  'remediation',
  'policy_version',
] as const satisfies readonly (keyof AppUsageRow)[];

export const VIOLATIONS_COLUMNS = [
  'alert_id',
  'enterprise_id',
  'ts',
  'carrier',
  'tower_id',
  'tower_location',
  'region',
  'event_id',
  'stream_seq',
  'device_id',
  'user_id',
  'user_name',
  'app_id',
  'app_name',
  'action_id',
  'action_name',
  'policy_id',
  'policy_name',
  'rule_id',
  'severity',
  'remediation',
  'policy_version',
] as const satisfies readonly (keyof ViolationRow)[];

export const DEAD_LETTER_COLUMNS = [
  'ts',
  'stream',
  'subject',
  'stream_seq',
  'code',
  'message',
  'event_index',
  'payload_base64',
  'rejected_count',
  'rejections',
  'payload_bytes',
  'payload_truncated',
] as const satisfies readonly (keyof DeadLetterRow)[];

const TSV_TYPE_OF: Readonly<Record<string, TsvColumnType>> = {
  ts: 'datetime64ms',
  event_id: 'uint',
  stream_seq: 'uint',
  bytes_up: 'uint',
  bytes_down: 'uint',
  event_index: 'int',
  rejected_count: 'uint',
  payload_bytes: 'uint',
  payload_truncated: 'bool',
};
const tsvTypes = (columns: readonly string[]): readonly TsvColumnType[] =>
  Object.freeze(columns.map((c) => TSV_TYPE_OF[c] ?? 'string'));

/**
 * TSV column types in insert order, for `encodeTsv(rows, APP_USAGE_TSV_TYPES)`: timestamps are
 * then written so that ClickHouse reads them exactly, and null/undefined strings as ''.
 */
export const APP_USAGE_TSV_TYPES = tsvTypes(APP_USAGE_COLUMNS);
export const VIOLATIONS_TSV_TYPES = tsvTypes(VIOLATIONS_COLUMNS);
export const DEAD_LETTER_TSV_TYPES = tsvTypes(DEAD_LETTER_COLUMNS);

/** Insert columns of the tables the pipeline writes. */
export const INSERT_COLUMNS = {
  app_usage: APP_USAGE_COLUMNS,
  violations: VIOLATIONS_COLUMNS,
  dead_letters: DEAD_LETTER_COLUMNS,
} as const satisfies Record<string, readonly string[]>;
export type InsertTable = keyof typeof INSERT_COLUMNS;

/** Appends one app_usage row (in {@link APP_USAGE_COLUMNS} order) to a TSV writer. */
export function writeAppUsageRow(w: TsvWriter, r: AppUsageRow): void {
  w.string(r.enterprise_id)
    .dateTime64(r.ts)
    .string(r.carrier)
    .string(r.tower_id)
    .uint(r.event_id)
    .uint(r.stream_seq)
    .string(r.device_id)
    .string(r.user_id)
    .string(r.user_name)
    .string(r.app_id)
    .string(r.app_name)
    .string(r.app_category)
    .string(r.action_id)
    .string(r.action_name)
    .uint(r.bytes_up)
    .uint(r.bytes_down)
    .string(r.verdict)
    .string(r.policy_id)
    .string(r.policy_name)
    .string(r.rule_id)
    .string(r.severity)
    .string(r.remediation)
    .string(r.policy_version)
    .endRow();
}

/** Appends one violations row (in {@link VIOLATIONS_COLUMNS} order). */
export function writeViolationRow(w: TsvWriter, r: ViolationRow): void {
  w.string(r.alert_id)
    .string(r.enterprise_id)
    .dateTime64(r.ts)
    .string(r.carrier)
    .string(r.tower_id)
    .string(r.tower_location)
    .string(r.region)
    .uint(r.event_id)
    .uint(r.stream_seq)
    .string(r.device_id)
    .string(r.user_id)
    .string(r.user_name)
    .string(r.app_id)
    .string(r.app_name)
    .string(r.action_id)
    .string(r.action_name)
    .string(r.policy_id)
    .string(r.policy_name)
    .string(r.rule_id)
    .string(r.severity)
    .string(r.remediation)
    .string(r.policy_version)
    .endRow();
}

/** Appends one dead_letters row (in {@link DEAD_LETTER_COLUMNS} order). */
export function writeDeadLetterRow(w: TsvWriter, r: DeadLetterRow): void {
  w.dateTime64(r.ts)
    .string(r.stream)
    .string(r.subject)
    .uint(r.stream_seq)
    .string(r.code)
    .string(r.message)
    .int(r.event_index)
    .string(r.payload_base64)
    .uint(r.rejected_count)
    .string(r.rejections)
    .uint(r.payload_bytes)
    .bool(r.payload_truncated)
    .endRow();
}

// ---------------------------------------------------------------------------------------------
// DDL

interface DdlContext {
  /** Database name (an identifier, checked by openClickHouse). */
  readonly db: string;
  readonly retentionDays: number;
}

export interface Migration {
  readonly version: number;
  readonly name: string;
  /** Statements, each idempotent on its own (IF NOT EXISTS…), run in order. */
  statements(ctx: DdlContext): readonly string[];
}

const TABLE_SETTINGS = `SETTINGS non_replicated_deduplication_window = ${DEDUPLICATION_WINDOW}, ttl_only_drop_parts = 1`;
const DT = "DateTime64(3, 'UTC')";
const LC = 'LowCardinality(String)';
const VERDICT_TYPE = `Enum8(${VERDICTS.map((v, i) => `'${v}' = ${i + 1}`).join(', ')})`;

/** Tables with a retention TTL, and the time expression it counts from (projections go with their parts). */
export const TTL_COLUMNS = {
  app_usage: 'toDateTime(ts)',
  violations: 'toDateTime(ts)',
  dead_letters: 'toDateTime(ts)',
  remedial_actions: 'toDateTime(executed_at)',
  discovery_sightings: 'toDateTime(ts)',
} as const satisfies Record<string, string>;
export type TtlTable = keyof typeof TTL_COLUMNS;

const ttl = (table: TtlTable, days: number): string => `${TTL_COLUMNS[table]} + INTERVAL ${days} DAY`;

/** Minute of an event, as the per-minute projections key it. */
const MINUTE = 'toStartOfMinute(ts)';

/**
 * The per-minute rollups, as projections. A query is answered from one when every column it
 * reads is a key or aggregate of it: group by and filter on `PER_MINUTE.minute`, not on `ts`.
 */
export const PER_MINUTE = { minute: MINUTE } as const;

/** Projections by table: the keys they group by and the aggregates they keep. */
export const PROJECTIONS = {
  app_usage: {
    /** Events and bytes by enterprise × minute × tower × app × verdict. */
    per_minute: {
      keys: ['enterprise_id', MINUTE, 'tower_id', 'app_id', 'app_name', 'app_category', 'verdict'],
      aggregates: ['count()', 'sum(bytes_up)', 'sum(bytes_down)'],
    },
    /** Each device's sightings per day (first/last time, last tower and carrier). */
    device_days: {
      keys: ['enterprise_id', 'device_id', 'toDate(ts)'],
      aggregates: ['min(ts)', 'max(ts)', 'argMax(tower_id, ts)', 'argMax(carrier, ts)', 'count()'],
    },
  },
  violations: {
    /** Violations by enterprise × minute × tower × app × user × policy × severity. */
    per_minute: {
      keys: ['enterprise_id', MINUTE, 'tower_id', 'app_id', 'app_name', 'user_id', 'user_name', 'policy_id', 'policy_name', 'severity'],
      aggregates: ['count()'],
    },
  },
} as const satisfies Record<string, Record<string, { keys: readonly string[]; aggregates: readonly string[] }>>;

function projectionDdl(db: string, table: keyof typeof PROJECTIONS): string[] {
  return Object.entries(PROJECTIONS[table]).flatMap(([name, { keys, aggregates }]) => [
    `ALTER TABLE ${db}.${table} ADD PROJECTION IF NOT EXISTS ${name}
      (SELECT ${[...keys, ...aggregates].join(', ')} GROUP BY ${keys.join(', ')})`,
    // Builds it for parts written before (a background mutation; nothing to do on new tables).
    `ALTER TABLE ${db}.${table} MATERIALIZE PROJECTION ${name}`,
  ]);
}

/** Ordered migrations; append, never edit one that has shipped. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'tables and per-minute views',
    statements: ({ db, retentionDays: days }) => [
      `CREATE TABLE IF NOT EXISTS ${db}.app_usage (
        enterprise_id ${LC},
        ts ${DT},
        carrier ${LC},
        tower_id ${LC},
        event_id UInt64,
        stream_seq UInt64,
        device_id String,
        user_id String,
        user_name String,
        app_id ${LC},
        app_name ${LC},
        app_category ${LC},
        action_id ${LC},
        action_name ${LC},
        bytes_up UInt64,
        bytes_down UInt64,
        verdict ${VERDICT_TYPE},
        policy_id String,
        policy_name String,
        rule_id String,
        severity ${LC},
        remediation ${LC},
        policy_version ${LC},
        ingested_at ${DT} DEFAULT now64(3)
      ) ENGINE = MergeTree
      PARTITION BY toDate(ts)
      ORDER BY (enterprise_id, ts, tower_id, event_id)
      TTL ${ttl('app_usage', days)}
      ${TABLE_SETTINGS}`,

      `CREATE TABLE IF NOT EXISTS ${db}.violations (
        alert_id String,
        enterprise_id ${LC},
        ts ${DT},
        carrier ${LC},
        tower_id ${LC},
        tower_location String,
        region ${LC},
        event_id UInt64,
        stream_seq UInt64,
        device_id String,
        user_id String,
        user_name String,
        app_id ${LC},
        app_name ${LC},
        action_id ${LC},
        action_name ${LC},
        policy_id String,
        policy_name String,
        rule_id String,
        severity ${LC},
        remediation ${LC},
        policy_version ${LC},
        ingested_at ${DT} DEFAULT now64(3)
      ) ENGINE = MergeTree
      PARTITION BY toDate(ts)
      ORDER BY (enterprise_id, ts, tower_id, event_id)
      TTL ${ttl('violations', days)}
      ${TABLE_SETTINGS}`,

      `CREATE TABLE IF NOT EXISTS ${db}.dead_letters (
        ts ${DT},
        stream ${LC},
        subject String,
        stream_seq UInt64,
        code ${LC},
        message String,
        event_index Int32,
        payload_base64 String
      ) ENGINE = MergeTree
      PARTITION BY toDate(ts)
      ORDER BY (stream, ts, stream_seq)
      TTL ${ttl('dead_letters', days)}
      ${TABLE_SETTINGS}`,

      `CREATE TABLE IF NOT EXISTS ${db}.usage_per_minute (
        enterprise_id ${LC},
        minute DateTime('UTC'),
        tower_id ${LC},
        app_id ${LC},
        app_name ${LC},
        app_category ${LC},
        verdict ${VERDICT_TYPE},
        events UInt64,
        bytes_up UInt64,
        bytes_down UInt64
      ) ENGINE = SummingMergeTree((events, bytes_up, bytes_down))
      PARTITION BY toDate(minute)
      ORDER BY (enterprise_id, minute, tower_id, app_id, app_name, app_category, verdict)
      TTL minute + INTERVAL ${days} DAY
      ${TABLE_SETTINGS}`,

      `CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.usage_per_minute_mv TO ${db}.usage_per_minute AS
      SELECT
        enterprise_id,
        toStartOfMinute(toDateTime(ts)) AS minute,
        tower_id,
        app_id,
        app_name,
        app_category,
        verdict,
        count() AS events,
        sum(bytes_up) AS bytes_up,
        sum(bytes_down) AS bytes_down
      FROM ${db}.app_usage
      GROUP BY enterprise_id, minute, tower_id, app_id, app_name, app_category, verdict`,

      `CREATE TABLE IF NOT EXISTS ${db}.violations_per_minute (
        enterprise_id ${LC},
        minute DateTime('UTC'),
        tower_id ${LC},
        app_id ${LC},
        app_name ${LC},
        user_id String,
        user_name String,
        policy_id String,
        policy_name String,
        severity ${LC},
        count UInt64
      ) ENGINE = SummingMergeTree((count))
      PARTITION BY toDate(minute)
      ORDER BY (enterprise_id, minute, tower_id, app_id, app_name, user_id, user_name, policy_id, policy_name, severity)
      TTL minute + INTERVAL ${days} DAY
      ${TABLE_SETTINGS}`,

      `CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.violations_per_minute_mv TO ${db}.violations_per_minute AS
      SELECT
        enterprise_id,
        toStartOfMinute(toDateTime(ts)) AS minute,
        tower_id,
        app_id,
        app_name,
        user_id,
        user_name,
        policy_id,
        policy_name,
        severity,
        count() AS count
      FROM ${db}.violations
      GROUP BY enterprise_id, minute, tower_id, app_id, app_name, user_id, user_name, policy_id, policy_name, severity`,

      // One row per (device, day) once merged; a device's last sighting is the merge over days,
      // and a device unseen for the retention period drops out with its last day.
      `CREATE TABLE IF NOT EXISTS ${db}.device_sightings (
        enterprise_id ${LC},
        device_id String,
        day Date,
        first_ts SimpleAggregateFunction(min, ${DT}),
        last_ts SimpleAggregateFunction(max, ${DT}),
        last_tower_id AggregateFunction(argMax, String, ${DT}),
        last_carrier AggregateFunction(argMax, String, ${DT}),
        events SimpleAggregateFunction(sum, UInt64)
      ) ENGINE = AggregatingMergeTree
      PARTITION BY day
      ORDER BY (enterprise_id, device_id)
      TTL day + INTERVAL ${days} DAY
      ${TABLE_SETTINGS}`,

      `CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.device_sightings_mv TO ${db}.device_sightings AS
      SELECT
        enterprise_id,
        device_id,
        toDate(ts) AS day,
        min(ts) AS first_ts,
        max(ts) AS last_ts,
        argMaxState(CAST(tower_id AS String), ts) AS last_tower_id,
        argMaxState(CAST(carrier AS String), ts) AS last_carrier,
        count() AS events
      FROM ${db}.app_usage
      GROUP BY enterprise_id, device_id, day`,
    ],
  },
  {
    version: 2,
    name: 'skip indexes for drill-downs and redelivery checks',
    statements: ({ db }) => [
      `ALTER TABLE ${db}.app_usage
        ADD INDEX IF NOT EXISTS idx_device_id device_id TYPE bloom_filter(0.01) GRANULARITY 4,
        ADD INDEX IF NOT EXISTS idx_user_id user_id TYPE bloom_filter(0.01) GRANULARITY 4,
        ADD INDEX IF NOT EXISTS idx_stream_seq stream_seq TYPE minmax GRANULARITY 1`,
      `ALTER TABLE ${db}.violations
        ADD INDEX IF NOT EXISTS idx_alert_id alert_id TYPE bloom_filter(0.01) GRANULARITY 4,
        ADD INDEX IF NOT EXISTS idx_device_id device_id TYPE bloom_filter(0.01) GRANULARITY 4,
        ADD INDEX IF NOT EXISTS idx_user_id user_id TYPE bloom_filter(0.01) GRANULARITY 4,
        ADD INDEX IF NOT EXISTS idx_stream_seq stream_seq TYPE minmax GRANULARITY 1`,
      `ALTER TABLE ${db}.dead_letters
        ADD INDEX IF NOT EXISTS idx_stream_seq stream_seq TYPE minmax GRANULARITY 1`,
    ],
  },
  {
    version: 3,
    name: 'per-minute rollups as projections (exact after a crash), views and rollup tables dropped',
    statements: ({ db }) => [
      ...projectionDdl(db, 'app_usage'),
      ...projectionDdl(db, 'violations'),
      ...['usage_per_minute', 'violations_per_minute', 'device_sightings'].flatMap((t) => [
        `DROP VIEW IF EXISTS ${db}.${t}_mv`,
        `DROP TABLE IF EXISTS ${db}.${t}`,
      ]),
    ],
  },
  {
    version: 4,
    name: 'remedial actions: every outcome of a block/unblock command',
    statements: ({ db, retentionDays: days }) => [
      `CREATE TABLE IF NOT EXISTS ${db}.remedial_actions (
        action_id String,
        alert_id String,
        enterprise_id ${LC},
        device_id String,
        tower_id ${LC},
        carrier ${LC},
        app_id ${LC},
        action ${LC},
        trigger ${LC},
        status ${LC},
        attempts UInt8,
        reason String,
        requested_by String,
        requested_at ${DT},
        executed_at ${DT},
        stream_seq UInt64
      ) ENGINE = MergeTree
      PARTITION BY toDate(executed_at)
      ORDER BY (enterprise_id, executed_at, action_id)
      TTL ${ttl('remedial_actions', days)}
      ${TABLE_SETTINGS}`,
      `ALTER TABLE ${db}.remedial_actions ADD INDEX IF NOT EXISTS idx_action_id action_id TYPE bloom_filter(0.01) GRANULARITY 1`,
    ],
  },
  {
    version: 5,
    name: 'device sightings: every discovery report, so that the registry is written only on change',
    statements: ({ db, retentionDays: days }) => [
      // enterprise_id is the registry's owner of the device, else the enterprise the carrier
      // reported, else '' (a consumer SIM); reported_enterprise keeps what the carrier said.
      `CREATE TABLE IF NOT EXISTS ${db}.discovery_sightings (
        enterprise_id ${LC},
        device_id String,
        ts ${DT},
        carrier ${LC},
        tower_id ${LC},
        model ${LC},
        os ${LC},
        os_version ${LC},
        first_seen Bool,
        reported_enterprise ${LC},
        outcome ${LC},
        stream_seq UInt64,
        report_index UInt32
      ) ENGINE = MergeTree
      PARTITION BY toDate(ts)
      ORDER BY (enterprise_id, device_id, ts)
      TTL ${ttl('discovery_sightings', days)}
      ${TABLE_SETTINGS}`,
      `ALTER TABLE ${db}.discovery_sightings ADD INDEX IF NOT EXISTS idx_stream_seq stream_seq TYPE minmax GRANULARITY 1`,
    ],
  },
  {
    version: 6,
    name: 'dead letters: one row per message (payload stored once, reasons capped and counted)',
    statements: ({ db }) => [
      // Rows from before are one per rejection: each counts 1 and has no list.
      `ALTER TABLE ${db}.dead_letters
        ADD COLUMN IF NOT EXISTS rejected_count UInt32 DEFAULT 1,
        ADD COLUMN IF NOT EXISTS rejections String DEFAULT '',
        ADD COLUMN IF NOT EXISTS payload_bytes UInt32 DEFAULT toUInt32(length(tryBase64Decode(payload_base64))),
        ADD COLUMN IF NOT EXISTS payload_truncated Bool DEFAULT false`,
    ],
  },
];

/** Highest migration version this code knows. */
export const SCHEMA_VERSION = MIGRATIONS.reduce((max, m) => Math.max(max, m.version), 0);

// ---------------------------------------------------------------------------------------------
// migrate

export interface MigrateOptions {
  /** Days of history kept (TTL of every history table). */
  retentionDays: number;
  /** Called for each migration applied and each TTL changed. */
  log?: (line: string) => void;
}

export interface MigrateResult {
  /** Versions applied by this call (empty when the schema was current). */
  applied: number[];
  /** Tables whose TTL was changed to `retentionDays` by this call. */
  ttlChanged: TtlTable[];
}

/**
 * Brings the schema to {@link SCHEMA_VERSION} and the TTLs to `retentionDays`. Safe to run at
 * every start and concurrently from several processes: every statement is idempotent, and a
 * migration is recorded only after all its statements succeeded.
 * @throws {ClickHouseOpenError} `invalid_options` for a bad `retentionDays`, or when the
 *   database has migrations newer than this code (refusing to run an old binary on it).
 */
export async function migrate(handle: ClickHouseHandle, options: MigrateOptions): Promise<MigrateResult> {
  const { retentionDays } = options;
  if (!Number.isInteger(retentionDays) || retentionDays < 1 || retentionDays > MAX_RETENTION_DAYS) {
    throw new ClickHouseOpenError(
      ClickHouseErrorCode.InvalidOptions,
      `retentionDays must be an integer 1–${MAX_RETENTION_DAYS}, got ${String(retentionDays)}`,
    );
  }
  const { client, database: db } = handle;
  const log = options.log ?? (() => {});
  await client.command({
    query: `CREATE TABLE IF NOT EXISTS ${db}.schema_migrations (
      version UInt32,
      name String,
      applied_at ${DT} DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree ORDER BY version`,
  });
  const done = new Set(
    (
      await (
        await client.query({ query: `SELECT DISTINCT version FROM ${db}.schema_migrations`, format: 'JSONEachRow' })
      ).json<{ version: number }>()
    ).map((r) => Number(r.version)),
  );
  const newest = Math.max(0, ...done);
  if (newest > SCHEMA_VERSION) {
    throw new ClickHouseOpenError(
      ClickHouseErrorCode.InvalidOptions,
      `database ${db} has schema version ${newest}, newer than this towerwatch knows (${SCHEMA_VERSION}); upgrade towerwatch`,
    );
  }

  const applied: number[] = [];
  const ctx: DdlContext = { db, retentionDays };
  for (const m of [...MIGRATIONS].sort((a, b) => a.version - b.version)) {
    if (done.has(m.version)) continue;
    for (const statement of m.statements(ctx)) await client.command({ query: statement });
    await client.insert({
      table: `${db}.schema_migrations`,
      values: [{ version: m.version, name: m.name }],
      format: 'JSONEachRow',
    });
    applied.push(m.version);
    log(`clickhouse: applied migration ${m.version} (${m.name})`);
  }

  const ttlChanged: TtlTable[] = [];
  const current = await currentTtlDays(handle);
  for (const table of Object.keys(TTL_COLUMNS) as TtlTable[]) {
    if (current.get(table) === retentionDays) continue;
    await client.command({ query: `ALTER TABLE ${db}.${table} MODIFY TTL ${ttl(table, retentionDays)}` });
    ttlChanged.push(table);
    log(`clickhouse: ${table} keeps ${retentionDays} days (was ${current.get(table) ?? 'none'})`);
  }
  return { applied, ttlChanged };
}

/** Days of each history table's TTL as the server reports it (absent: no TTL found). */
export async function currentTtlDays(handle: ClickHouseHandle): Promise<Map<TtlTable, number>> {
  const rows = await (
    await handle.client.query({
      query: `SELECT name, create_table_query FROM system.tables WHERE database = {db:String} AND name IN {names:Array(String)}`,
      query_params: { db: handle.database, names: Object.keys(TTL_COLUMNS) },
      format: 'JSONEachRow',
    })
  ).json<{ name: string; create_table_query: string }>();
  const out = new Map<TtlTable, number>();
  for (const r of rows) {
    // e.g. "… TTL toDateTime(ts) + toIntervalDay(30) SETTINGS …"
    const days = /\bTTL\b[^]*?toIntervalDay\((\d+)\)/.exec(r.create_table_query)?.[1];
    if (days !== undefined) out.set(r.name as TtlTable, Number(days));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Queries the schema is for

export interface DeviceLastSeen {
  enterprise_id: string;
  device_id: string;
  /** Epoch ms of the first sighting within the kept history (or since `sinceMs`). */
  first_seen_ms: number;
  last_seen_ms: number;
  last_tower_id: string;
  last_carrier: string;
  /** Events seen (within the same window as `first_seen_ms`). */
  events: number;
}

export interface DeviceLastSeenQuery {
  /** One enterprise ('' for unknown devices); absent: every enterprise (carrier operators). */
  enterpriseId?: string;
  /** Only these devices. */
  deviceIds?: readonly string[];
  /** Only sightings on or after this day (epoch ms; rounded down to the UTC day). */
  sinceMs?: number;
  /** Most recently seen first. @default 1000 */
  limit?: number;
}

/**
 * Each device's last sighting (tower, carrier, time) and first sighting, newest first, read from
 * app_usage's `device_days` projection (one row per device and day per part).
 */
export async function queryDeviceLastSeen(handle: ClickHouseHandle, q: DeviceLastSeenQuery = {}): Promise<DeviceLastSeen[]> {
  const where: string[] = [];
  const params: Record<string, unknown> = { limit: q.limit ?? 1000 };
  if (q.enterpriseId !== undefined) {
    where.push('enterprise_id = {enterprise:String}');
    params['enterprise'] = q.enterpriseId;
  }
  if (q.deviceIds !== undefined) {
    where.push('device_id IN {devices:Array(String)}');
    params['devices'] = [...q.deviceIds];
  }
  if (q.sinceMs !== undefined) {
    // On the projection's key (a day), not on ts, so that the projection answers it.
    where.push("toDate(ts) >= toDate(fromUnixTimestamp64Milli({since:Int64}, 'UTC'))");
    params['since'] = q.sinceMs;
  }
  const rows = await (
    await handle.client.query({
      query: `SELECT
          enterprise_id,
          device_id,
          toUnixTimestamp64Milli(min(ts)) AS first_seen_ms,
          toUnixTimestamp64Milli(max(ts)) AS last_seen_ms,
          CAST(argMax(tower_id, ts) AS String) AS last_tower_id,
          CAST(argMax(carrier, ts) AS String) AS last_carrier,
          count() AS events
        FROM ${handle.database}.app_usage
        ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''}
        GROUP BY enterprise_id, device_id
        ORDER BY last_seen_ms DESC, device_id
        LIMIT {limit:UInt32}`,
      query_params: params,
      format: 'JSONEachRow',
    })
  ).json<Record<keyof DeviceLastSeen, string | number>>();
  return rows.map((r) => ({
    enterprise_id: String(r.enterprise_id),
    device_id: String(r.device_id),
    first_seen_ms: Number(r.first_seen_ms),
    last_seen_ms: Number(r.last_seen_ms),
    last_tower_id: String(r.last_tower_id),
    last_carrier: String(r.last_carrier),
    events: Number(r.events),
  }));
}

/**
 * SQL and parameters for "which of these stream sequences have rows in `table`" (redelivered
 * messages). The minmax index on stream_seq skips parts of other batches.
 */
export function storedSeqsQuery(database: string, table: InsertTable | 'discovery_sightings', seqs: readonly number[], stream = 'USAGE') {
  // dead_letters holds rows of several streams, whose sequences overlap.
  const ofStream = table === 'dead_letters' ? ' AND stream = {stream:String}' : '';
  return {
    query: `SELECT DISTINCT stream_seq FROM ${database}.${table} WHERE stream_seq IN {seqs:Array(UInt64)}${ofStream}`,
    query_params: { seqs: [...seqs], stream },
  };
}

/** Which of `seqs` already have rows in `table` (of `stream`, for dead_letters): {@link storedSeqsQuery} run. */
export async function queryStoredSeqs(handle: ClickHouseHandle, table: InsertTable | 'discovery_sightings', seqs: readonly number[], stream = 'USAGE'): Promise<Set<number>> {
  if (seqs.length === 0) return new Set();
  const { query, query_params } = storedSeqsQuery(handle.database, table, seqs, stream);
  const rows = await (await handle.client.query({ query, query_params, format: 'JSONCompactEachRow' })).json<[string | number]>();
  return new Set(rows.map((r) => Number(r[0])));
}

export interface DeviceSighting {
  device_id: string;
  first_seen_ms: number;
  last_seen_ms: number;
  last_tower_id: string;
  last_carrier: string;
  sightings: number;
}

/** Each of these devices' first and last sighting by the towers (discovery_sightings), within the kept history. */
export async function queryDeviceSightings(handle: ClickHouseHandle, q: { enterpriseId: string; deviceIds: readonly string[] }): Promise<Map<string, DeviceSighting>> {
  if (q.deviceIds.length === 0) return new Map();
  const rows = await (
    await handle.client.query({
      query: `SELECT
          device_id,
          toUnixTimestamp64Milli(min(ts)) AS first_seen_ms,
          toUnixTimestamp64Milli(max(ts)) AS last_seen_ms,
          CAST(argMax(tower_id, ts) AS String) AS last_tower_id,
          CAST(argMax(carrier, ts) AS String) AS last_carrier,
          count() AS sightings
        FROM ${handle.database}.discovery_sightings
        WHERE enterprise_id = {enterprise:String} AND device_id IN {devices:Array(String)}
        GROUP BY device_id`,
      query_params: { enterprise: q.enterpriseId, devices: [...q.deviceIds] },
      format: 'JSONEachRow',
    })
  ).json<Record<keyof DeviceSighting, string | number>>();
  return new Map(
    rows.map((r) => [
      String(r.device_id),
      { device_id: String(r.device_id), first_seen_ms: Number(r.first_seen_ms), last_seen_ms: Number(r.last_seen_ms), last_tower_id: String(r.last_tower_id), last_carrier: String(r.last_carrier), sightings: Number(r.sightings) },
    ]),
  );
}

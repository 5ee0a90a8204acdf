/**
 * The ClickHouse schema of towerwatch and its migrations, applied idempotently at start by
 * `migrate` (migrate.ts): ordered, numbered migrations recorded in `schema_migrations`, then the
 * retention TTL reconciled with the configured days.
 *
 * Layout, for the dashboard's queries (always one enterprise and a time range):
 * - raw tables `app_usage` and `violations`: PARTITION BY day, ORDER BY (enterprise_id, ts, …),
 *   so a range query reads only that enterprise's granules of those days, newest-first lists
 *   read in key order, and retention drops whole day-parts (`ttl_only_drop_parts`);
 *   drill-downs by device, user or alert use skip indexes; `stream_seq` has a minmax index
 *   for the redelivery check (`storedSeqsQuery`, queries.ts).
 * - per-minute and per-hour rollups as aggregate projections of the raw tables (`per_minute` and
 *   `per_hour` on both, and `device_days` on app_usage for the devices' sightings): a
 *   projection is written into the
 *   same data part as the rows it sums, so it is exact whatever is killed when (a materialized
 *   view commits a part of its own, and a crash in between leaves it short), and it is
 *   deduplicated with them. Dashboards read thousands of rows instead of millions when a query
 *   groups by and filters on the projection's keys only: `toStartOfMinute(ts)`, not `ts`
 *   (see {@link PER_MINUTE}, {@link PER_HOUR}); `force_optimize_projection = 1` turns a miss
 *   into an error.
 * - every table keeps the last 1000 insert tokens (`non_replicated_deduplication_window`) so
 *   that a retried batch with the same `insert_deduplication_token` is dropped, projections and
 *   all.
 */
import { VERDICTS } from './rows.js';
import type { DataTable } from './tables.js';

/** Insert tokens remembered per table. */
export const DEDUPLICATION_WINDOW = 1000;

// ---------------------------------------------------------------------------------------------
// DDL

export interface DdlContext {
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

/** Parts of the hot tables smaller than this (uncompressed) are compact: one file for all columns. */
export const COMPACT_PART_MAX_BYTES = 64 * 1024 * 1024;
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
} as const satisfies Partial<Record<DataTable, string>>;
export type TtlTable = keyof typeof TTL_COLUMNS;

/** The TTL expression of `table` keeping `days` of history. */
export const ttl = (table: TtlTable, days: number): string => `${TTL_COLUMNS[table]} + INTERVAL ${days} DAY`;

/** Minute of an event, as the per-minute projections key it. */
const MINUTE = 'toStartOfMinute(ts)';
/** Hour of an event, as the per-hour projections key it. */
const HOUR = 'toStartOfHour(ts)';

/**
 * The per-minute rollups, as projections. A query is answered from one when every column it
 * reads is a key or aggregate of it: group by and filter on `PER_MINUTE.minute`, not on `ts`.
 */
export const PER_MINUTE = { minute: MINUTE } as const;
/**
 * The per-hour rollups: the same keys by hour (`PER_HOUR.hour`), 30–60 times fewer rows than
 * the per-minute ones, so that a day or a week is read in milliseconds. A range's whole hours
 * come from these and its partial hours at each end from the per-minute ones.
 */
export const PER_HOUR = { hour: HOUR } as const;

/** Projections by table: the keys they group by and the aggregates they keep. */
export const PROJECTIONS = {
  app_usage: {
    /** Events and bytes by enterprise × minute × tower × app × verdict. */
    per_minute: {
      keys: ['enterprise_id', MINUTE, 'tower_id', 'app_id', 'app_name', 'app_category', 'verdict'],
      aggregates: ['count()', 'sum(bytes_up)', 'sum(bytes_down)'],
    },
    /** Events and bytes by enterprise × hour × tower × app × verdict. */
    per_hour: {
      keys: ['enterprise_id', HOUR, 'tower_id', 'app_id', 'app_name', 'app_category', 'verdict'],
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
    /** Violations by enterprise × hour × tower × app × user × policy × severity. */
    per_hour: {
      keys: ['enterprise_id', HOUR, 'tower_id', 'app_id', 'app_name', 'user_id', 'user_name', 'policy_id', 'policy_name', 'severity'],
      aggregates: ['count()'],
    },
  },
} as const satisfies Record<string, Record<string, { keys: readonly string[]; aggregates: readonly string[] }>>;

function projectionDdl<T extends keyof typeof PROJECTIONS>(db: string, table: T, names: ReadonlyArray<keyof (typeof PROJECTIONS)[T] & string>): string[] {
  const defs = PROJECTIONS[table] as Record<string, { keys: readonly string[]; aggregates: readonly string[] }>;
  return names.flatMap((name) => {
    const { keys, aggregates } = defs[name]!;
    return [
      `ALTER TABLE ${db}.${table} ADD PROJECTION IF NOT EXISTS ${name}
      (SELECT ${[...keys, ...aggregates].join(', ')} GROUP BY ${keys.join(', ')})`,
      // Builds it for parts written before (a background mutation; nothing to do on new tables).
      `ALTER TABLE ${db}.${table} MATERIALIZE PROJECTION ${name}`,
    ];
  });
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
      ...projectionDdl(db, 'app_usage', ['per_minute', 'device_days']),
      ...projectionDdl(db, 'violations', ['per_minute']),
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
  {
    version: 7,
    name: 'per-hour rollups as projections: a day or a week of dashboard in milliseconds',
    statements: ({ db }) => [...projectionDdl(db, 'app_usage', ['per_hour']), ...projectionDdl(db, 'violations', ['per_hour'])],
  },
  {
    version: 8,
    name: 'policy versions: every policy set an enterprise had, with its author, parent and source',
    statements: ({ db }) => [
      // One row per change (a version reached from its parent); kept without TTL, so every
      // stored row's policy_version keeps pointing at one. Several api nodes record the same
      // change within seconds (one 10 s bucket); the merge keeps the row that knows its author.
      `CREATE TABLE IF NOT EXISTS ${db}.policy_versions (
        enterprise_id ${LC},
        version String,
        parent String,
        bucket UInt32,
        author String,
        author_known UInt8,
        created_at ${DT},
        timezone String,
        inputs String,
        entities String
      ) ENGINE = ReplacingMergeTree(author_known)
      ORDER BY (enterprise_id, version, parent, bucket)
      SETTINGS non_replicated_deduplication_window = ${DEDUPLICATION_WINDOW}`,
    ],
  },
  {
    version: 9,
    name: 'decision inputs on every usage row: what the evaluator saw, so that history can be replayed',
    statements: ({ db }) => [
      // Rows from before have decision_inputs = 0: not replayable, never guessed.
      `ALTER TABLE ${db}.app_usage
        ADD COLUMN IF NOT EXISTS role_ids ${LC} DEFAULT '' AFTER policy_version,
        ADD COLUMN IF NOT EXISTS region ${LC} DEFAULT '' AFTER role_ids,
        ADD COLUMN IF NOT EXISTS os ${LC} DEFAULT '' AFTER region,
        ADD COLUMN IF NOT EXISTS os_version ${LC} DEFAULT '' AFTER os,
        ADD COLUMN IF NOT EXISTS decision_inputs UInt8 DEFAULT 0 AFTER os_version`,
    ],
  },
  {
    version: 10,
    name: 'shadow verdicts: what policies and rules in shadow mode would have decided',
    statements: ({ db }) => [
      // '' when the enterprise had nothing in shadow mode.
      `ALTER TABLE ${db}.app_usage
        ADD COLUMN IF NOT EXISTS shadow_verdict ${LC} DEFAULT '' AFTER decision_inputs,
        ADD COLUMN IF NOT EXISTS shadow_policy_id String DEFAULT '' AFTER shadow_verdict,
        ADD COLUMN IF NOT EXISTS shadow_rule_id String DEFAULT '' AFTER shadow_policy_id`,
    ],
  },
  {
    version: 11,
    name: 'the hot tables write an insert as one file (compact parts) until merges make parts of 64 MiB',
    statements: ({ db }) =>
      // A wide part writes every column (and a LowCardinality column's dictionary) through its
      // own compressed buffers: measured on app_usage at 96k rows per insert, a compact part takes
      // half the insert time and 40 % less memory. Merged parts past the threshold are wide, as
      // before, for the reads.
      (['app_usage', 'violations'] as const).map((t) => `ALTER TABLE ${db}.${t} MODIFY SETTING min_bytes_for_wide_part = ${COMPACT_PART_MAX_BYTES}`),
  },
];

/** Highest migration version this code knows. */
export const SCHEMA_VERSION = MIGRATIONS.reduce((max, m) => Math.max(max, m.version), 0);

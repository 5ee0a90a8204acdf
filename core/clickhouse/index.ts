/**
 * ClickHouse for towerwatch: opening it (embedded chdb or a server), the schema and its
 * migrations, one row definition per table written at runtime, the TSV and Native encoders, and the shared
 * queries. The public surface of this folder: code outside core/clickhouse imports from here
 * (except the pipeline's worker threads, which import the pure `rows.ts`, `tsv.ts` and `native.ts` only, so
 * no thread loads the ClickHouse client).
 */
export * from './migrate.js';
export * from './migrations.js';
export * from './native.js';
export * from './open.js';
export * from './queries.js';
export * from './retention.js';
export * from './rows.js';
export * from './tables.js';
export * from './tsv.js';

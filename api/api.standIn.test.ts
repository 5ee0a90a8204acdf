/**
 * api/api.test.ts once more with ClickHouse over HTTP: the pipeline's inserts (Native, TSV and
 * JSON bodies) and every query the api makes go through @clickhouse/client's HTTP transport to
 * the stand-in of core/testing/clickhouseStandIn.ts (a real engine behind ClickHouse's
 * protocol), with credentials in the URL, as a deployment with CLICKHOUSE_URL does.
 */
process.env['TOWERWATCH_TEST_CLICKHOUSE'] = 'stand-in';
await import('./api.test.js');

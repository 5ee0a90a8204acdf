/** The queries of core/clickhouse/queries.ts, and the projections they read, on the embedded engine. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { INSERT_SETTINGS, projected, RECENT_TS, rows, usageRow, withClickHouse } from '../testing/clickhouseFixture.js';
import { migrate } from './migrate.js';
import { PER_MINUTE } from './migrations.js';
import { queryDeviceLastSeen } from './queries.js';
import { APP_USAGE, VIOLATIONS, type ViolationRow } from './rows.js';
import { TsvWriter } from './tsv.js';

const clickhouse = withClickHouse('towerwatch-queries-');

test('the per-minute and device projections answer the rollup queries (and are used: forced)', async () => {
  const h = await clickhouse.open('schema_mv');
  await migrate(h, { retentionDays: 30 });
  const t0 = RECENT_TS;
  const w = new TsvWriter();
  APP_USAGE.writeRow(w, usageRow({ event_id: 1, ts: t0 }));
  APP_USAGE.writeRow(w, usageRow({ event_id: 2, ts: t0 + 20_000, bytes_up: 5, bytes_down: 7 })); // same minute
  APP_USAGE.writeRow(w, usageRow({ event_id: 3, ts: t0 + 60_000, tower_id: 'nyc-002', verdict: 'deny', severity: 'high' }));
  APP_USAGE.writeRow(w, usageRow({ event_id: 4, ts: t0 - 86_400_000, device_id: 'dev-2', tower_id: 'bos-001' })); // a day earlier
  APP_USAGE.writeRow(
    w,
    usageRow({
      event_id: 5,
      ts: t0 + 120_000,
      enterprise_id: '',
      device_id: 'stranger',
      verdict: 'unregistered',
      user_id: '',
      user_name: '',
      policy_id: '',
      policy_name: '',
      policy_version: 'none',
    }),
  );
  await h.insertFormatted({ table: 'app_usage', columns: APP_USAGE.columns, format: 'TabSeparated', body: w.finish(), settings: INSERT_SETTINGS });

  const perMinute = await projected<Record<string, unknown>>(
    h,
    `SELECT enterprise_id, toString(toUnixTimestamp(${PER_MINUTE.minute}) * 1000) AS minute_ms, tower_id, app_id, app_name, verdict,
            toUInt32(count()) AS events, toUInt32(sum(bytes_up)) AS up, toUInt32(sum(bytes_down)) AS down
     FROM ${h.database}.app_usage
     WHERE enterprise_id = 'acme' AND ${PER_MINUTE.minute} >= toDateTime(0)
     GROUP BY enterprise_id, ${PER_MINUTE.minute}, tower_id, app_id, app_name, verdict ORDER BY minute_ms`,
  );
  // A query on ts itself cannot be answered from the projection: forcing it says so.
  await assert.rejects(
    projected(h, `SELECT count() FROM ${h.database}.app_usage WHERE ts >= toDateTime64(0, 3) GROUP BY tower_id`),
    /PROJECTION_NOT_USED|projection/i,
  );
  const minute = t0 - (t0 % 60_000);
  assert.deepEqual(perMinute, [
    {
      enterprise_id: 'acme',
      minute_ms: String(minute - 86_400_000),
      tower_id: 'bos-001',
      app_id: 'tiktok',
      app_name: 'TikTok',
      verdict: 'allow',
      events: 1,
      up: 100,
      down: 1000,
    },
    {
      enterprise_id: 'acme',
      minute_ms: String(minute),
      tower_id: 'nyc-001',
      app_id: 'tiktok',
      app_name: 'TikTok',
      verdict: 'allow',
      events: 2,
      up: 105,
      down: 1007,
    },
    {
      enterprise_id: 'acme',
      minute_ms: String(minute + 60_000),
      tower_id: 'nyc-002',
      app_id: 'tiktok',
      app_name: 'TikTok',
      verdict: 'deny',
      events: 1,
      up: 100,
      down: 1000,
    },
  ]);

  const seen = await queryDeviceLastSeen(h, { enterpriseId: 'acme' });
  assert.deepEqual(seen, [
    { enterprise_id: 'acme', device_id: 'dev-1', first_seen_ms: t0, last_seen_ms: t0 + 60_000, last_tower_id: 'nyc-002', last_carrier: 'att', events: 3 },
    {
      enterprise_id: 'acme',
      device_id: 'dev-2',
      first_seen_ms: t0 - 86_400_000,
      last_seen_ms: t0 - 86_400_000,
      last_tower_id: 'bos-001',
      last_carrier: 'att',
      events: 1,
    },
  ]);
  // A later insert moves the last sighting; filters by device and day.
  const w2 = new TsvWriter();
  APP_USAGE.writeRow(w2, usageRow({ event_id: 6, ts: t0 + 3_600_000, tower_id: 'nyc-009', carrier: 'tmo' }));
  await h.insertFormatted({ table: 'app_usage', columns: APP_USAGE.columns, format: 'TabSeparated', body: w2.finish(), settings: INSERT_SETTINGS });
  assert.deepEqual(await queryDeviceLastSeen(h, { enterpriseId: 'acme', deviceIds: ['dev-1'] }), [
    { enterprise_id: 'acme', device_id: 'dev-1', first_seen_ms: t0, last_seen_ms: t0 + 3_600_000, last_tower_id: 'nyc-009', last_carrier: 'tmo', events: 4 },
  ]);
  assert.deepEqual(
    (await queryDeviceLastSeen(h, { enterpriseId: 'acme', sinceMs: t0 })).map((d) => d.device_id),
    ['dev-1'],
  );
  assert.deepEqual(
    (await queryDeviceLastSeen(h, { enterpriseId: '' })).map((d) => d.device_id),
    ['stranger'],
  );
  assert.equal((await queryDeviceLastSeen(h)).length, 3);
  assert.equal((await queryDeviceLastSeen(h, { limit: 1 }))[0]?.device_id, 'dev-1');

  // The violation of usage event 3: its usage columns, and where it was and what was broken.
  const v: ViolationRow = {
    ...usageRow({ event_id: 3, ts: t0 + 60_000, tower_id: 'nyc-002', rule_id: 'r-1', severity: 'high', remediation: 'block_app' }),
    alert_id: 'att:nyc-002:3',
    tower_location: 'New York City',
    region: 'us-east',
  };
  const wv = new TsvWriter();
  VIOLATIONS.writeRow(wv, v);
  VIOLATIONS.writeRow(wv, { ...v, alert_id: 'att:nyc-002:4', event_id: 4, ts: v.ts + 1000 });
  await h.insertFormatted({ table: 'violations', columns: VIOLATIONS.columns, format: 'TabSeparated', body: wv.finish(), settings: INSERT_SETTINGS });
  assert.deepEqual(
    await projected(
      h,
      `SELECT tower_id, app_id, user_id, user_name, policy_id, severity, toUInt32(count()) AS n
      FROM ${h.database}.violations WHERE enterprise_id = 'acme'
      GROUP BY tower_id, app_id, user_id, user_name, policy_id, severity`,
    ),
    [{ tower_id: 'nyc-002', app_id: 'tiktok', user_id: 'u-1', user_name: 'Ada', policy_id: 'p-1', severity: 'high', n: 2 }],
  );
  assert.deepEqual(await rows(h, `SELECT alert_id, toString(toUnixTimestamp64Milli(ts)) AS ms, remediation FROM ${h.database}.violations ORDER BY ts`), [
    { alert_id: 'att:nyc-002:3', ms: String(v.ts), remediation: 'block_app' },
    { alert_id: 'att:nyc-002:4', ms: String(v.ts + 1000), remediation: 'block_app' },
  ]);
});

/**
 * Retention per plan: the history tables keep each enterprise's rows for its plan's
 * retention_days, and follow a plan change. Backdated rows in the real engine (chdb), a real
 * control plane on a real nats-server; `OPTIMIZE … FINAL` stands in for the TTL merges
 * ClickHouse runs on its own schedule.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import type { NatsConnection } from '@nats-io/transport-node';
import { type ClickHouseHandle, currentTtlClauses, migrate, RETENTION_TABLES, retentionTtl } from '../core/clickhouse/index.js';
import { type ControlPlaneStore, ControlPlaneView } from '../core/controlPlane/index.js';
import type { Enterprise } from '../core/domain.js';
import { openTempClickHouse } from '../core/testing/clickhouseFixture.js';
import { connectControlPlane } from '../core/testing/controlPlaneFixture.js';
import { withNats } from '../core/testing/natsFixture.js';
import { until } from '../core/testing/until.js';
import { seedWorld } from '../fixtures/seed.js';
import { BRIEF, generateWorld } from '../fixtures/world.js';
import { RetentionKeeper } from './retentionKeeper.js';

const nats = await withNats();
const world = generateWorld({ seed: 21, enterprises: 3, usersPerEnterprise: 4, towers: 4 });
const DAY = 86_400_000;
/** Ages of the backdated rows, in days. */
const AGES = [10, 45, 120, 400];

describe('retention per plan', () => {
  let nc: NatsConnection;
  let store: ControlPlaneStore;
  let view: ControlPlaneView;
  let dataDir: string;
  let ch: ClickHouseHandle;
  let keeper: RetentionKeeper | undefined;
  const logged: string[] = [];
  // acme is on enterprise_plus (365 days), globex on business (90); a third on starter (30).
  const starter: Enterprise = { id: 'initech', name: 'Initech', plan_id: 'starter', timezone: 'UTC' };

  before(async () => {
    ({ nc, store } = await connectControlPlane(nats, async (s) => {
      await seedWorld(s, world);
      await s.upsert('enterprise', starter);
    }));
    view = await ControlPlaneView.open(nc);
    ({ dataDir, ch } = await openTempClickHouse('tw-retention-', { retentionDays: 30 }));
  });
  after(async () => {
    await keeper?.close();
    await view?.close();
    await ch?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  const insertBackdated = async (first: number): Promise<void> => {
    const now = Date.now();
    const values: string[] = [];
    let id = first;
    for (const e of [BRIEF.acme, BRIEF.globex, starter.id, '']) {
      for (const age of AGES) values.push(`('${e}', fromUnixTimestamp64Milli(${now - age * DAY}, 'UTC'), ${id++})`);
    }
    for (const table of ['app_usage', 'violations']) {
      await ch.client.command({ query: `INSERT INTO ${table} (enterprise_id, ts, event_id) VALUES ${values.join(', ')}` });
    }
  };
  /** Ages (days) of each enterprise's rows left in `table` once the TTL merges ran. */
  const kept = async (table: string): Promise<Record<string, number[]>> => {
    await ch.client.command({ query: `OPTIMIZE TABLE ${table} FINAL` });
    const rs = await ch.client.query({
      query: `SELECT enterprise_id AS e, arraySort(groupArray(toUInt32(round(dateDiff('second', ts, now64(3)) / 86400)))) AS ages FROM ${table} GROUP BY e ORDER BY e`,
      format: 'JSONEachRow',
    });
    return Object.fromEntries((await rs.json<{ e: string; ages: number[] }>()).map((r) => [r.e, r.ages.map(Number)]));
  };

  it("keeps each enterprise's rows for its plan's days, and rows of no enterprise for the default", async () => {
    // Started before any row is stored, as the pipeline service does: until then the tables keep
    // the default for everyone (the schema's TTL), and a TTL merge may run at any time.
    keeper = await RetentionKeeper.start({ view, clickhouse: ch, defaultDays: 30, settleMs: 50, log: (l) => void logged.push(l) });
    assert.equal(keeper.changes, 1);
    await insertBackdated(1);
    const clauses = await currentTtlClauses(ch, RETENTION_TABLES);
    for (const table of RETENTION_TABLES) {
      assert.equal(clauses.get(table), retentionTtl(table, keeper.spec()), `${table}'s TTL reads back as written`);
    }
    assert.match(
      clauses.get('app_usage') ?? '',
      /toIntervalDay\(365\), .*toIntervalDay\(30\) WHERE enterprise_id IN \('', 'initech'\), .*toIntervalDay\(90\) WHERE enterprise_id IN \('globex'\)/,
    );
    const expected = { '': [10], acme: [10, 45, 120], globex: [10, 45], initech: [10] };
    assert.deepEqual(await kept('app_usage'), expected);
    assert.deepEqual(await kept('violations'), expected);
    assert.ok(
      logged.some((l) => /^retention: app_usage, violations, remedial_actions, discovery_sightings keep 30 \/ 90 \/ 365 days by plan/.test(l)),
      logged.join('\n'),
    );
  });

  it('a restart sends no DDL, and migrate leaves the per-plan TTL alone', async () => {
    const again = await RetentionKeeper.start({ view, clickhouse: ch, defaultDays: 30 });
    await again.close();
    assert.equal(again.changes, 0, 'the TTL in place is the one asked for');
    const before = await currentTtlClauses(ch, RETENTION_TABLES);
    const migrated = await migrate(ch, { retentionDays: 30 });
    assert.deepEqual(
      migrated.ttlChanged.filter((t) => (RETENTION_TABLES as readonly string[]).includes(t)),
      [],
    );
    assert.deepEqual(await currentTtlClauses(ch, RETENTION_TABLES), before);
  });

  it('follows a plan change: globex moved to starter loses what is older than 30 days; a new enterprise is named', async () => {
    await insertBackdated(1_000);
    const globex = view.enterprise(BRIEF.globex) ?? assert.fail('globex');
    await store.upsert('enterprise', { ...globex, plan_id: 'starter' });
    await store.upsert('enterprise', { id: 'hooli', name: 'Hooli', plan_id: 'business', timezone: 'UTC' });
    await until(
      async () =>
        /'globex', 'initech'/.test((await currentTtlClauses(ch, ['app_usage'])).get('app_usage') ?? '') &&
        /'hooli'/.test((await currentTtlClauses(ch, ['app_usage'])).get('app_usage') ?? ''),
      10_000,
      'the TTL follows the change',
    );
    const rows = await kept('app_usage');
    assert.deepEqual(rows['globex'], [10, 10]);
    assert.deepEqual(rows['acme'], [10, 10, 45, 45, 120, 120]);
    // The plan back: what is gone stays gone, new rows keep 90 days again.
    await store.upsert('enterprise', globex);
    await until(
      async () => /toIntervalDay\(90\) WHERE enterprise_id IN \('globex', 'hooli'\)/.test((await currentTtlClauses(ch, ['app_usage'])).get('app_usage') ?? ''),
      10_000,
      'globex back on business',
    );
  });

  it('a plan without usable retention_days keeps the default, and says so', async () => {
    const starterPlan = view.plan('starter') ?? assert.fail('starter');
    await store.upsert('plan', { ...starterPlan, retention_days: 0 });
    await until(
      async () => logged.some((l) => /retention: enterprise initech's plan starter has no usable retention_days \(0\); keeping 30 days/.test(l)),
      10_000,
      'the warning',
    );
    await store.upsert('plan', starterPlan);
  });
});

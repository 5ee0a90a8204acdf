/**
 * The version recorder rides out a ClickHouse that cannot take its rows: it logs, keeps trying
 * (bounded by its retry period, never a crash), and records every enterprise's version once
 * ClickHouse can, each exactly once.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { migrate } from '../core/clickhouse/index.js';
import { ControlPlaneView } from '../core/controlPlane/index.js';
import { withClickHouse } from '../core/testing/clickhouseFixture.js';
import { connectControlPlane } from '../core/testing/controlPlaneFixture.js';
import { withNats } from '../core/testing/natsFixture.js';
import { until } from '../core/testing/until.js';
import { seedWorld } from '../fixtures/seed.js';
import { generateWorld } from '../fixtures/world.js';
import { PolicyVersions } from './policyVersions.js';

const nats = await withNats();
const clickhouse = withClickHouse('towerwatch-recorder-');

test('versions that cannot be written are retried until ClickHouse takes them, once each', async () => {
  const world = generateWorld({ seed: 7, enterprises: 3 });
  const { nc } = await connectControlPlane(nats, (s) => seedWorld(s, world));
  const view = await ControlPlaneView.open(nc);
  // No tables yet: every write fails, as with ClickHouse away.
  const ch = await clickhouse.open('recorder');
  const logs: string[] = [];
  const versions = await PolicyVersions.start(view, ch, { log: (l) => logs.push(l), now: Date.now, debounceMs: 20, retryMs: 100 });
  try {
    await until(() => logs.filter((l) => l.includes('could not record the policy version')).length >= 6, 10_000, 'failed writes, retried');
    await migrate(ch, { retentionDays: 30 });
    const recorded = async (): Promise<Array<{ enterprise_id: string; n: string }>> =>
      (
        await ch.client.query({ query: 'SELECT enterprise_id, toString(count()) AS n FROM policy_versions GROUP BY enterprise_id', format: 'JSONEachRow' })
      ).json();
    await until(async () => (await recorded()).length === world.enterprises.length, 10_000, 'every enterprise recorded');
    await versions.settled();
    assert.deepEqual(
      (await recorded()).map((r) => [r.enterprise_id, r.n]).sort(),
      world.enterprises.map((e) => [e.id, '1']).sort(),
      'one version each, however many tries',
    );
  } finally {
    versions.close();
    await view.close();
  }
});

/**
 * Previews on the embedded engine, checked against brute force: for random drafts (every kind of
 * condition, edges placed on the stored values) over random stored rows, the preview's counts,
 * remediations, top users, apps and towers and samples equal what re-evaluating each stored row
 * with the reference evaluator gives. Also: cancel, a ClickHouse that fails under a preview, and
 * two api nodes on one NATS answering for each other's jobs.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { APP_USAGE, type AppUsageRow, type ClickHouseHandle, migrate } from '../core/clickhouse/index.js';
import { TsvWriter } from '../core/clickhouse/tsv.js';
import { INSERT_SETTINGS, usageRow, withClickHouse } from '../core/testing/clickhouseFixture.js';
import { evaluateReference, normalizePolicies, verdictChange, type PolicyInput, type RuleInput } from '../rules-wasm/index.js';
import { withNats } from '../core/testing/natsFixture.js';
import { Random } from '../fixtures/random.js';
import { LocalClock } from '../rules-wasm/localClock.js';
import { evalEventOfStored, storedVerdictOf, type StoredDecision } from './history.js';
import { PolicyPreviews, type PreviewJob, type PreviewResult } from './previews.js';

const clickhouse = withClickHouse('towerwatch-previews-');
const nats = await withNats();
const DAY = 86_400_000;
const NOW = Date.now();
const FROM = NOW - 10 * DAY;
const TO = NOW - DAY;

const ROLES = ['r-eng', 'r-sales', 'r-ops'];
const APPS = [
  { id: 'slack', name: 'Slack', category: 'messaging' },
  { id: 'chatgpt', name: 'ChatGPT', category: 'ai' },
  { id: 'tiktok', name: 'TikTok', category: 'social' },
  { id: 'dropbox', name: 'Dropbox', category: 'file_sharing' },
  { id: 'zoom', name: 'Zoom', category: '' },
];
const ACTIONS = ['Upload File', 'Send Message', 'Login'];
const TOWERS = ['nyc-001', 'nyc-002', 'sfo-001', 'bos-001'];
const REGIONS = ['US-NY', 'US-CA', ''];
const OSES = ['iOS', 'Android', 'iPadOS', ''];
const VERSIONS = ['15.1', '16', '17.2', '11', '12.0', ''];
const BYTES = [0, 99, 100, 101, 5_000, 1_000_000, 1_000_001];
const ZONES = ['UTC', 'America/New_York', 'Asia/Kolkata'];

/**
 * A time at the first or last millisecond of a minute at which the drafts' windows start or end
 * (09:00, 09:17 … 17:30 local, in one of the zones), or just before one.
 */
function edgeTs(rnd: Random): number {
  const zone = rnd.pick(ZONES);
  const day = Math.floor((NOW - 12 * DAY + rnd.next() * 11 * DAY) / DAY) * DAY;
  const local = day + rnd.pick([9, 17]) * 3_600_000 + rnd.pick([0, 17, 30]) * 60_000;
  return local - new LocalClock(zone).offsetMs(local) + rnd.pick([-1, 0, 59_999]);
}

let h: ClickHouseHandle;
const stored: AppUsageRow[] = [];

before(async () => {
  h = await clickhouse.open('previews');
  await migrate(h, { retentionDays: 30 });
  const rnd = new Random(11);
  for (let i = 0; i < 4000; i++) {
    // Half the rows sit at window edges, all of one who and what: a class that mixes the minutes
    // either side of an edge would show.
    const edge = rnd.next() < 0.5;
    const app = edge ? APPS[0]! : rnd.pick(APPS);
    const deny = !edge && rnd.next() < 0.3;
    // Few combinations of who, what and stored verdict: classes of many rows, which an inexact
    // class (one that mixes rows the draft tells apart) would get wrong.
    const roles = edge ? ['r-eng'] : rnd.pick([['r-eng'], ['r-sales', 'r-ops'], []]);
    stored.push(
      usageRow({
        enterprise_id: i % 9 === 0 ? 'globex' : 'acme',
        // Some outside the window on either side.
        ts: edge ? edgeTs(rnd) : NOW - 12 * DAY + Math.floor(rnd.next() * 12 * DAY),
        tower_id: rnd.pick(TOWERS),
        event_id: i,
        stream_seq: i + 1,
        user_id: `u-${rnd.int(0, 40)}`,
        user_name: 'someone',
        app_id: app.id,
        app_name: app.name,
        app_category: app.category,
        action_name: edge ? 'Send Message' : rnd.pick(ACTIONS),
        bytes_up: rnd.next() < 0.8 ? rnd.pick(BYTES) : rnd.int(0, 2_000_000),
        bytes_down: rnd.pick(BYTES),
        verdict: i % 23 === 0 ? 'unregistered' : deny ? 'deny' : 'allow',
        rule_id: deny ? 'x1' : '',
        policy_id: 'p-old',
        severity: deny ? 'high' : '',
        remediation: deny && app.category === 'ai' ? 'block_app' : '',
        role_ids: roles.join(','),
        region: rnd.pick(REGIONS),
        os: rnd.pick(OSES),
        os_version: rnd.pick(VERSIONS),
        decision_inputs: i % 31 === 0 ? 0 : 1,
      }),
    );
  }
  for (let part = 0; part < 3; part++) {
    const w = new TsvWriter();
    for (const r of stored.filter((_, i) => i % 3 === part)) APP_USAGE.writeRow(w, r);
    await h.insertFormatted({ table: 'app_usage', columns: APP_USAGE.columns, format: 'TabSeparated', body: w.finish(), settings: INSERT_SETTINGS });
  }
});

/** A random draft: 1–3 policies of 1–5 rules, each condition kind drawn with its edges on stored values. */
function randomDraft(rnd: Random): PolicyInput[] {
  const minute = (): string => `${rnd.pick(['09', '17', String(rnd.int(0, 23)).padStart(2, '0')])}:${rnd.pick(['00', '30', '17'])}`;
  const when = (): RuleInput['when'] => {
    const w: NonNullable<RuleInput['when']> = {};
    if (rnd.next() < 0.3) w.days = ROLES.length > 0 ? ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'].filter(() => rnd.next() < 0.5).concat('sat') : [];
    if (rnd.next() < 0.3) w.time = { from: minute(), to: minute() };
    if (rnd.next() < 0.2) w.towers = TOWERS.filter(() => rnd.next() < 0.5).concat('nyc-001');
    if (rnd.next() < 0.2) w.regions = ['US-NY'];
    if (rnd.next() < 0.2) w.os = ['ios', 'Android'].filter(() => rnd.next() < 0.7).concat('iPadOS');
    if (rnd.next() < 0.2) w.os_version_at_least = rnd.pick(['12', '16.0', '17.2']);
    if (rnd.next() < 0.2) w.os_version_below = rnd.pick(['12', '16.0', '17.2']);
    if (rnd.next() < 0.3) w.bytes_up_over = rnd.pick(BYTES);
    if (rnd.next() < 0.2) w.bytes_down_over = rnd.pick(BYTES);
    if (rnd.next() < 0.2) w.bytes_total_over = rnd.pick(BYTES) + rnd.pick(BYTES);
    if (w.time !== undefined && w.time.from === w.time.to) delete w.time;
    return Object.keys(w).length > 0 ? w : undefined;
  };
  return Array.from({ length: rnd.int(1, 4) }, (_, p) => ({
    policy_id: `p${p}`,
    name: `Policy ${p}`,
    default_permission: rnd.next() < 0.2 ? 'deny' : 'allow',
    role_ids: ROLES.filter(() => rnd.next() < 0.6),
    rules: Array.from({ length: rnd.int(1, 6) }, (_, r): RuleInput => {
      const deny = rnd.next() < 0.6;
      const app = rnd.pick(APPS);
      const target = rnd.int(0, 3);
      return {
        rule_id: `p${p}r${r}`,
        ...(target === 0 ? { app_name: app.name } : target === 1 && app.category !== '' ? { app_category: app.category } : {}),
        ...(rnd.next() < 0.6 ? { action: rnd.pick(ACTIONS) } : {}),
        ...(rnd.next() < 0.3 ? { role_id: rnd.pick(ROLES) } : {}),
        permission: deny ? 'deny' : 'allow',
        severity: rnd.pick(['low', 'medium', 'high', 'critical'] as const),
        ...(deny && rnd.next() < 0.6 ? { remediation: rnd.pick(['notify', 'block_app', 'block_device'] as const) } : {}),
        ...(rnd.next() < 0.8 ? { when: when() } : {}),
      };
    }),
  }));
}

/** What a preview must answer, by brute force over the stored rows. */
function expected(
  draft: PolicyInput[],
  timezone: string,
): Omit<PreviewResult, 'policy_version' | 'duration_ms' | 'events_per_s' | 'decision_classes' | 'samples'> & {
  byEvent: Map<string, { change: string; after: unknown }>;
} {
  const set = normalizePolicies(draft, { timezone });
  const out = {
    events_scanned: 0,
    not_replayable: 0,
    changed: { allow_to_deny: 0, deny_to_allow: 0, severity_changed: 0, remediation_changed: 0 },
    remediations: { before: {} as Record<string, number>, after: {} as Record<string, number> },
    top_users: [] as PreviewResult['top_users'],
    top_apps: [] as PreviewResult['top_apps'],
    top_towers: [] as PreviewResult['top_towers'],
    byEvent: new Map<string, { change: string; after: unknown }>(),
  };
  const users = new Map<string, number>();
  const apps = new Map<string, number>();
  const towers = new Map<string, number>();
  const bump = (m: Map<string, number> | Record<string, number>, k: string): void => {
    if (m instanceof Map) m.set(k, (m.get(k) ?? 0) + 1);
    else m[k] = (m[k] ?? 0) + 1;
  };
  for (const r of stored) {
    if (r.enterprise_id !== 'acme' || r.ts < FROM || r.ts >= TO) continue;
    out.events_scanned++;
    if (r.decision_inputs !== 1 || r.verdict === 'unregistered') {
      out.not_replayable++;
      continue;
    }
    const row: StoredDecision = { ...r, ts: r.ts };
    const beforeV = storedVerdictOf(row);
    const afterV = evaluateReference(set, evalEventOfStored(row));
    if (beforeV.permission === 'deny' && beforeV.remediation !== null) bump(out.remediations.before, beforeV.remediation);
    if (afterV.permission === 'deny' && afterV.remediation !== null) bump(out.remediations.after, afterV.remediation);
    const change = verdictChange(beforeV, afterV);
    if (change === null) continue;
    out.changed[change]++;
    bump(users, r.user_id);
    bump(apps, r.app_id);
    bump(towers, r.tower_id);
    out.byEvent.set(`${r.carrier}:${r.tower_id}:${r.event_id}`, { change, after: afterV });
  }
  const top = (m: Map<string, number>): Array<[string, number]> => [...m].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 10);
  out.top_users = top(users).map(([user_id, changed]) => ({ user_id, user_name: 'someone', changed }));
  out.top_apps = top(apps).map(([app_id, changed]) => ({ app_id, app_name: APPS.find((a) => a.id === app_id)!.name, changed }));
  out.top_towers = top(towers).map(([tower_id, changed]) => ({ tower_id, changed }));
  return out;
}

async function finished(previews: PolicyPreviews, job: PreviewJob): Promise<PreviewJob> {
  for (let i = 0; i < 600; i++) {
    const j = (await previews.get('acme', job.id))!;
    if (j.status !== 'running') return j;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('the preview did not finish in 12 s');
}

describe('policy previews against brute force', () => {
  it('random drafts over random stored rows: every count, top list and sample as re-evaluating each row gives', async () => {
    const previews = new PolicyPreviews(h, { now: () => Date.now() });
    const rnd = new Random(5);
    let changedSomewhere = 0;
    for (let run = 0; run < 12; run++) {
      const draft = randomDraft(rnd);
      const timezone = ZONES[run % ZONES.length]!;
      const job = await finished(previews, await previews.start({ enterpriseId: 'acme', inputs: draft, timezone, from: FROM, to: TO, label: 'acme' }));
      const what = `run ${run} (${timezone}): ${JSON.stringify(draft)}`;
      assert.equal(job.status, 'done', `${what}: ${job.error ?? ''}`);
      const got = job.result!;
      const want = expected(draft, timezone);
      assert.equal(got.events_scanned, want.events_scanned, what);
      assert.equal(job.scanned, job.total, what);
      assert.equal(got.not_replayable, want.not_replayable, what);
      assert.deepEqual(got.changed, want.changed, what);
      assert.deepEqual(got.remediations, want.remediations, what);
      assert.deepEqual(got.top_users, want.top_users, what);
      assert.deepEqual(got.top_apps, want.top_apps, what);
      assert.deepEqual(got.top_towers, want.top_towers, what);
      assert.equal(got.samples.length, Math.min(20, want.byEvent.size), what);
      for (const s of got.samples) {
        const w = want.byEvent.get(s.event_key);
        assert.ok(w !== undefined, `${what}: sample ${s.event_key} did not change`);
        assert.equal(s.change, w.change, what);
        assert.deepEqual(s.after, w.after, what);
      }
      assert.ok(got.decision_classes <= want.events_scanned, what);
      changedSomewhere += want.byEvent.size;
    }
    assert.ok(changedSomewhere > 0, 'some draft changed something');

    // A draft without conditions tells events apart only by who, what and the stored verdict.
    const plain: PolicyInput[] = [{ policy_id: 'p0', name: 'Plain', role_ids: ['r-eng'], rules: [{ app_name: 'Slack', permission: 'deny' }] }];
    const job = await finished(previews, await previews.start({ enterpriseId: 'acme', inputs: plain, timezone: 'UTC', from: FROM, to: TO, label: 'acme' }));
    const keys = new Set(
      stored
        .filter((r) => r.enterprise_id === 'acme' && r.ts >= FROM && r.ts < TO)
        .map((r) =>
          [
            r.decision_inputs === 1 && r.verdict !== 'unregistered',
            r.role_ids,
            r.app_name,
            r.app_category,
            r.action_name,
            r.verdict,
            r.rule_id,
            r.policy_id,
            r.severity,
            r.remediation,
          ].join('|'),
        ),
    );
    assert.equal(job.result?.decision_classes, keys.size);
  });

  it('a cancelled preview stops; one whose ClickHouse fails is failed with the reason, and the api goes on', async () => {
    const previews = new PolicyPreviews(h, { now: () => Date.now() });
    const draft = randomDraft(new Random(1));
    const job = await previews.start({ enterpriseId: 'acme', inputs: draft, timezone: 'UTC', from: FROM, to: TO, label: 'acme' });
    assert.equal((await previews.cancel('acme', job.id))?.status, 'cancelled');
    assert.equal(await previews.cancel('globex', job.id), null, "another enterprise's preview is not there");
    assert.equal((await finished(previews, job)).result, null);

    // A database without the tables: every query fails.
    const empty = new PolicyPreviews(await clickhouse.open('previews_empty'), { now: () => Date.now() });
    const failed = await finished(empty, await empty.start({ enterpriseId: 'acme', inputs: draft, timezone: 'UTC', from: FROM, to: TO, label: 'acme' }));
    assert.equal(failed.status, 'failed');
    assert.match(failed.error ?? '', /app_usage/);
  });

  it("two api nodes on one NATS: either answers for the other's job, and a cancel on one stops it on the other", async () => {
    const nodes = await Promise.all(
      ['a', 'b'].map(async (n) => new PolicyPreviews(h, { now: () => Date.now(), nc: await nats.connect(`node ${n}`), rowsPerSlice: 100 })),
    );
    const [a, b] = [nodes[0]!, nodes[1]!];
    const draft = randomDraft(new Random(3));
    const job = await a.start({ enterpriseId: 'acme', inputs: draft, timezone: 'UTC', from: FROM, to: TO, label: 'acme' });
    const seen = await b.get('acme', job.id);
    assert.equal(seen?.id, job.id, 'shared before the 202');
    assert.equal(await b.get('globex', job.id), null, "another enterprise's job is not there on any node");
    const done = await finished(a, job);
    assert.equal(done.status, 'done');
    const fromB = await finished(b, job);
    assert.deepEqual(fromB, done, 'the other node reads the same result');

    // Many slices: a cancel through b stops a's job at its next one.
    const long = await a.start({ enterpriseId: 'acme', inputs: draft, timezone: 'UTC', from: FROM, to: TO, label: 'acme' });
    assert.equal(await b.cancel('globex', long.id), null);
    const asked = await b.cancel('acme', long.id);
    assert.equal(asked?.status, 'cancelled');
    const ended = await finished(a, long);
    assert.equal(ended.status, 'cancelled');
    assert.ok(ended.scanned < ended.total, `stopped early: ${ended.scanned} of ${ended.total}`);
    assert.equal((await finished(b, long)).status, 'cancelled');
    for (const n of nodes) n.close();
  });
});

/**
 * `towerwatch bench preview`: a policy preview over `--events` stored events of one enterprise
 * of the simulated world, on embedded ClickHouse, beside the limit it cannot beat in the same
 * run: the engine's own scan of the window into decision classes (the preview's first pass,
 * alone).
 *
 * The stored events are the world's: the traffic generator's events of that enterprise,
 * enriched, given a minute in the last week and decided by the enterprise's policies as they
 * are, make the templates; ClickHouse copies them into `--events` rows (each copy in the same
 * minute, so it keeps its verdict). Two drafts: the policies as they are (must change nothing)
 * and a realistic edit, "deny Upload File to AI assistants for Engineering".
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decisionClassPlan } from '../api/previewClasses.js';
import { decisionClassQuery, PolicyPreviews, type PreviewJob } from '../api/previews.js';
import { APP_USAGE, type AppUsageRow, type ClickHouseHandle, migrate, openClickHouse } from '../core/clickhouse/index.js';
import { TsvWriter } from '../core/clickhouse/tsv.js';
import { createTrafficGenerator } from '../fixtures/traffic.js';
import { generateWorld, indexWorld, type World } from '../fixtures/world.js';
import { worldDirectory, worldPolicyInputs } from '../fixtures/worldPolicies.js';
import { compilePolicies, enrichEvent, normalizePolicies, PolicyModule, type PolicyInput } from '../rules-wasm/index.js';
import { machine, writeResults } from './benchReport.js';

export interface PreviewBenchOptions {
  events: number;
  /** Distinct world events the stored rows are copied from. */
  templates: number;
  log: (line: string) => void;
}

export const DEFAULT_PREVIEW_EVENTS = 10_000_000;
export const DEFAULT_PREVIEW_TEMPLATES = 100_000;
const DAY = 86_400_000;
const MINUTE = 60_000;

export async function runPreviewBench(opts: PreviewBenchOptions): Promise<Record<string, unknown>> {
  const dir = await mkdtemp(join(tmpdir(), 'tw-bench-preview-'));
  const ch = await openClickHouse({ clickhouseUrl: null, dataDir: dir });
  try {
    await migrate(ch, { retentionDays: 30 });
    const world = generateWorld({ seed: 42 });
    const enterprise = busiestEnterprise(world);
    const timezone = world.enterprises.find((e) => e.id === enterprise)!.timezone;
    const current = worldPolicyInputs(world, enterprise);
    const now = Date.now();
    const from = now - 7 * DAY;
    const fill = await fillWorldHistory(ch, world, enterprise, current, timezone, opts, from, now);

    const previews = new PolicyPreviews(ch, { cacheDir: join(dir, 'wasm'), now: () => Date.now() });
    const edit = withAiUploadsDeniedFor(world, enterprise, current, 'Engineering');
    const runs: Record<string, unknown> = {};
    for (const [name, draft] of [
      ['as_they_are', current],
      ['deny_ai_uploads_for_engineering', edit],
    ] as const) {
      opts.log(`bench preview: ${name}…`);
      const t0 = performance.now();
      const job = await finished(previews, await previews.start({ enterpriseId: enterprise, inputs: draft, timezone, from, to: now, label: enterprise }));
      const wallMs = performance.now() - t0;
      if (job.result === null) throw new Error(`bench preview: the preview ${job.status}: ${job.error ?? ''}`);
      const limit = await rawClassScan(ch, draft, timezone, enterprise, from, now);
      const r = job.result;
      runs[name] = {
        events_scanned: r.events_scanned,
        decision_classes: r.decision_classes,
        duration_ms: r.duration_ms,
        wall_ms: Math.round(wallMs),
        events_per_s: r.events_per_s,
        ...limit,
        ratio_to_raw_scan: round3(r.events_per_s / limit.raw_scan_rows_per_s),
        changed: r.changed,
        remediations: r.remediations,
        top_users: r.top_users.slice(0, 3),
        top_apps: r.top_apps.slice(0, 3),
        rss_mb: Math.round(process.memoryUsage().rss / 2 ** 20),
      };
      opts.log(
        `bench preview: ${name}: ${r.events_scanned.toLocaleString('en-US')} events, ${r.decision_classes.toLocaleString('en-US')} classes, in ${r.duration_ms} ms (${r.events_per_s.toLocaleString('en-US')} events/s); the engine's class scan alone: ${limit.raw_scan_ms} ms (ratio ${String(round3(r.events_per_s / limit.raw_scan_rows_per_s))}); changed ${JSON.stringify(r.changed)}`,
      );
      if (name === 'as_they_are' && Object.values(r.changed).some((n) => n > 0)) {
        throw new Error(`bench preview: the policies as they are changed verdicts: ${JSON.stringify(r.changed)}`);
      }
    }
    previews.close();
    const result = { machine: machine(), enterprise, timezone, fill, runs };
    const file = await writeResults('preview', result);
    opts.log(`bench preview: results in ${file}`);
    return result;
  } finally {
    await ch.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** The first pass of a preview of `inputs`, alone: the engine's scan of the window into decision classes. */
export async function rawClassScan(
  ch: ClickHouseHandle,
  inputs: unknown,
  timezone: string | undefined,
  enterprise: string,
  from: number,
  to: number,
): Promise<{ raw_scan_rows: number; raw_scan_ms: number; raw_scan_rows_per_s: number }> {
  const set = normalizePolicies(inputs, timezone === undefined ? {} : { timezone });
  const t = performance.now();
  const rs = await ch.client.query({ ...decisionClassQuery(ch, decisionClassPlan(set), enterprise, from, to), format: 'JSONCompactEachRow' });
  const rows = (await rs.json<unknown[]>()).reduce<number>((n, r) => n + Number(r[19]), 0);
  const ms = performance.now() - t;
  return { raw_scan_rows: rows, raw_scan_ms: Math.round(ms), raw_scan_rows_per_s: Math.round(rows / (ms / 1000)) };
}

function busiestEnterprise(world: World): string {
  const devices = new Map<string, number>();
  for (const d of world.devices) if (d.user_id !== null) devices.set(d.enterprise_id, (devices.get(d.enterprise_id) ?? 0) + 1);
  return [...devices].sort((a, b) => b[1] - a[1])[0]![0];
}

/** The policies with one more: the team `roleName` may not upload files to AI assistants. */
function withAiUploadsDeniedFor(world: World, enterprise: string, current: PolicyInput[], roleName: string): PolicyInput[] {
  const role = world.roles.find((r) => r.enterprise_id === enterprise && r.name === roleName);
  if (role === undefined) throw new Error(`bench preview: ${enterprise} has no ${roleName} role`);
  return [
    ...current,
    {
      policy_id: 'bench-ai-uploads',
      name: `AI uploads (${roleName})`,
      role_ids: [role.id],
      rules: [{ rule_id: 'bench-ai-uploads-r1', app_category: 'ai', action: 'Upload File', permission: 'deny', severity: 'high', remediation: 'block_app' }],
    },
  ];
}

/**
 * `opts.events` rows of `enterprise` in [from, to): `opts.templates` world events decided by
 * `inputs` (TSV into a Memory table), copied by ClickHouse itself from numbers().
 */
async function fillWorldHistory(
  ch: ClickHouseHandle,
  world: World,
  enterprise: string,
  inputs: PolicyInput[],
  timezone: string,
  opts: PreviewBenchOptions,
  from: number,
  to: number,
): Promise<Record<string, unknown>> {
  const t = performance.now();
  const compiled = await compilePolicies(inputs, { timezone, label: enterprise });
  const module = await PolicyModule.instantiate(compiled, 8192);
  const dir = worldDirectory(world);
  const ix = indexWorld(world);
  const traffic = createTrafficGenerator(world, { seed: 9 });
  const minutes = Math.floor((to - from) / MINUTE) - 1;
  const templates: AppUsageRow[] = [];
  const decided: Array<Parameters<PolicyModule['evaluateEvents']>[0][number]> = [];
  let seed = 17;
  const next = (n: number): number => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31), seed % n);
  while (templates.length < opts.templates) {
    for (const frame of traffic.nextEvents(50_000)) {
      for (const e of frame.events) {
        if (templates.length >= opts.templates) break;
        const enriched = enrichEvent(dir, e);
        if (!enriched.enforced || enriched.enterpriseId !== enterprise) continue;
        // A whole minute of the window: each copy below lands in the same minute.
        const ts = Math.floor(from / MINUTE) * MINUTE + (1 + next(minutes)) * MINUTE;
        const event = { ...enriched.event, ts };
        const app = ix.app.get(e.app);
        const action = ix.action.get(e.action);
        decided.push(event);
        templates.push({
          enterprise_id: enterprise,
          ts,
          carrier: frame.carrier,
          tower_id: frame.tower,
          event_id: 0,
          stream_seq: 0,
          device_id: e.device,
          user_id: enriched.userId,
          user_name: ix.user.get(enriched.userId)?.name ?? '',
          app_id: e.app,
          app_name: app?.name ?? e.app,
          app_category: app?.category ?? '',
          action_id: e.action,
          action_name: action?.name ?? e.action,
          bytes_up: e.bytes_up,
          bytes_down: e.bytes_down,
          verdict: 'allow',
          policy_id: '',
          policy_name: '',
          rule_id: '',
          severity: '',
          remediation: '',
          policy_version: compiled.hash,
          role_ids: event.role_ids.join(','),
          region: event.region ?? '',
          os: event.os ?? '',
          os_version: event.os_version ?? '',
          decision_inputs: 1,
          shadow_verdict: '',
          shadow_policy_id: '',
          shadow_rule_id: '',
        });
      }
    }
  }
  const verdicts = module.evaluateEvents(decided);
  verdicts.forEach((v, i) => {
    const row = templates[i]!;
    row.verdict = v.permission;
    row.policy_id = v.policy_id ?? '';
    row.rule_id = v.rule_id ?? '';
    row.severity = v.severity ?? '';
    row.remediation = v.remediation ?? '';
  });
  await ch.client.command({ query: `CREATE TABLE preview_templates ENGINE = Memory AS SELECT * FROM app_usage LIMIT 0` });
  const w = new TsvWriter();
  for (const r of templates) APP_USAGE.writeRow(w, r);
  await ch.insertFormatted({
    table: 'preview_templates',
    columns: APP_USAGE.columns,
    format: 'TabSeparated',
    body: w.finish(),
    settings: { date_time_input_format: 'basic' },
  });
  const k = templates.length;
  // Copy i is template i % k, i / k ms into its minute (at most 60,000 copies of each).
  const select = APP_USAGE.columns.map((c) =>
    c === 'ts' ? `addMilliseconds(t.ts, intDiv(n.number, ${k}) % 60000)` : c === 'event_id' || c === 'stream_seq' ? 'n.number' : `t.${c}`,
  );
  await ch.client.command({
    query: `INSERT INTO app_usage (${APP_USAGE.columns.join(', ')})
      SELECT ${select.join(', ')} FROM numbers(${opts.events}) AS n
      INNER JOIN (SELECT *, rowNumberInAllBlocks() AS i FROM preview_templates) AS t ON t.i = n.number % ${k}`,
    clickhouse_settings: { max_insert_threads: '2' },
  });
  await ch.client.command({ query: 'DROP TABLE preview_templates' });
  const denied = templates.filter((r) => r.verdict === 'deny').length;
  const out = {
    events: opts.events,
    templates: k,
    templates_denied: denied,
    seconds: Math.round((performance.now() - t) / 100) / 10,
  };
  opts.log(
    `bench preview: ${opts.events.toLocaleString('en-US')} events of ${enterprise} copied from ${k.toLocaleString('en-US')} world events (${denied} denied) in ${out.seconds} s`,
  );
  return out;
}

async function finished(previews: PolicyPreviews, job: PreviewJob): Promise<PreviewJob> {
  for (;;) {
    const j = (await previews.get(job.enterprise_id, job.id))!;
    if (j.status !== 'running') return j;
    await new Promise((r) => setTimeout(r, 50));
  }
}

const round3 = (x: number): number => Math.round(x * 1000) / 1000;

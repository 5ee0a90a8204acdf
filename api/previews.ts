/**
 * Policy previews (backtests): a draft of an enterprise's policies replayed over the events it
 * stored in a window, each through the draft's compiled WASM module with the event's stored
 * decision inputs, and compared with the verdict stored at the time. Runs as a job on the api
 * node that took it (progress, cancel); rows without inputs (before schema 9) are counted as not
 * replayable, never guessed.
 */
import { randomBytes } from 'node:crypto';
import type { ClickHouseHandle } from '../core/clickhouse/index.js';
import { tableOf } from '../core/clickhouse/index.js';
import { compilePolicies, PolicyModule, verdictChange, type CellChange, type Verdict } from '../rules-wasm/index.js';
import { evalEventOfStored, storedVerdictOf, type StoredDecision } from './history.js';

export type PreviewChange = CellChange;

export interface PreviewResult {
  events_scanned: number;
  not_replayable: number;
  changed: Record<PreviewChange, number>;
  /** Denies by remediation, as stored and as the draft would have decided (its auto-remediations). */
  remediations: { before: Record<string, number>; after: Record<string, number> };
  top_users: Array<{ user_id: string; user_name: string; changed: number }>;
  top_apps: Array<{ app_id: string; app_name: string; changed: number }>;
  top_towers: Array<{ tower_id: string; changed: number }>;
  samples: Array<{ event_key: string; ts: string; user_id: string; app_name: string; action: string; change: PreviewChange; before: Verdict; after: Verdict }>;
  policy_version: string;
  duration_ms: number;
  events_per_s: number;
}

export interface PreviewJob {
  id: string;
  enterprise_id: string;
  status: 'running' | 'done' | 'failed' | 'cancelled';
  from: number;
  to: number;
  /** Rows in the window (counted at start). */
  total: number;
  scanned: number;
  started_at: number;
  finished_at: number | null;
  result: PreviewResult | null;
  error: string | null;
}

export interface PreviewOptions {
  enterpriseId: string;
  /** The draft, as the compiler takes it (rules-wasm language). */
  inputs: unknown;
  timezone: string | undefined;
  from: number;
  to: number;
  /** The compile label (the enterprise's, so that the current policies as a draft are the current version). */
  label: string;
}

/** What a preview reads of each stored event, in the order of {@link Row} (bench api reads the same for its limit). */
export const PREVIEW_COLUMNS = `toUnixTimestamp64Milli(ts), carrier, tower_id, toString(event_id), user_id, user_name, app_id, app_name, app_category,
  action_name, toString(bytes_up), toString(bytes_down), verdict, rule_id, policy_id, severity, remediation, role_ids, region, os, os_version, decision_inputs`;

/** Previews running at once on one node; more is a 429. */
export const MAX_RUNNING_PREVIEWS = 2;
const BATCH = 8192;
const TOP = 10;
const SAMPLES = 20;
/** Finished jobs are forgotten after this long. */
const KEEP_MS = 60 * 60 * 1000;

export class PreviewTooBusyError extends Error {}

export class PolicyPreviews {
  readonly #ch: ClickHouseHandle;
  readonly #jobs = new Map<string, PreviewJob & { abort: AbortController }>();
  readonly #cacheDir: string | undefined;
  readonly #now: () => number;

  constructor(ch: ClickHouseHandle, options: { cacheDir?: string | undefined; now: () => number }) {
    this.#ch = ch;
    this.#cacheDir = options.cacheDir;
    this.#now = options.now;
  }

  /**
   * Compiles the draft (throwing its PolicyCompileError at once) and starts the job.
   * @throws {PreviewTooBusyError} when {@link MAX_RUNNING_PREVIEWS} are running
   */
  async start(o: PreviewOptions): Promise<PreviewJob> {
    this.#forgetOld();
    if ([...this.#jobs.values()].filter((j) => j.status === 'running').length >= MAX_RUNNING_PREVIEWS) {
      throw new PreviewTooBusyError(`${MAX_RUNNING_PREVIEWS} previews are running on this node; wait for one or cancel it`);
    }
    const compiled = await compilePolicies(o.inputs, { timezone: o.timezone, cacheDir: this.#cacheDir, label: o.label });
    const module = await PolicyModule.instantiate(compiled, BATCH);
    const job: PreviewJob & { abort: AbortController } = {
      id: `pv_${randomBytes(9).toString('base64url')}`,
      enterprise_id: o.enterpriseId,
      status: 'running',
      from: o.from,
      to: o.to,
      total: 0,
      scanned: 0,
      started_at: this.#now(),
      finished_at: null,
      result: null,
      error: null,
      abort: new AbortController(),
    };
    this.#jobs.set(job.id, job);
    void this.#run(job, module).then(
      (result) => {
        if (job.status !== 'running') return;
        job.result = result;
        job.status = 'done';
        job.finished_at = this.#now();
      },
      (err: unknown) => {
        if (job.status !== 'running') return;
        job.status = 'failed';
        job.error = err instanceof Error ? err.message : String(err);
        job.finished_at = this.#now();
      },
    );
    return view(job);
  }

  /** The job, if it is this enterprise's. */
  get(enterpriseId: string, id: string): PreviewJob | null {
    const j = this.#jobs.get(id);
    return j === undefined || j.enterprise_id !== enterpriseId ? null : view(j);
  }

  /** Stops a running job; a finished one stays as it is. */
  cancel(enterpriseId: string, id: string): PreviewJob | null {
    const j = this.#jobs.get(id);
    if (j === undefined || j.enterprise_id !== enterpriseId) return null;
    if (j.status === 'running') {
      j.status = 'cancelled';
      j.finished_at = this.#now();
      j.abort.abort();
    }
    return view(j);
  }

  close(): void {
    for (const j of this.#jobs.values()) j.abort.abort();
  }

  #forgetOld(): void {
    const now = this.#now();
    for (const [id, j] of this.#jobs) if (j.finished_at !== null && now - j.finished_at > KEEP_MS) this.#jobs.delete(id);
  }

  async #run(job: PreviewJob & { abort: AbortController }, module: PolicyModule): Promise<PreviewResult> {
    const started = performance.now();
    const table = tableOf(this.#ch, 'app_usage');
    const where = `enterprise_id = {enterprise:String} AND ts >= fromUnixTimestamp64Milli({from:Int64}, 'UTC') AND ts < fromUnixTimestamp64Milli({to:Int64}, 'UTC')`;
    const params = { enterprise: job.enterprise_id, from: job.from, to: job.to };
    const count = await this.#ch.client.query({
      query: `SELECT toString(count()) FROM ${table} WHERE ${where}`,
      query_params: params,
      format: 'JSONCompactEachRow',
    });
    job.total = Number((await count.json<[string]>())[0]?.[0] ?? 0);

    const rs = await this.#ch.client.query({
      query: `SELECT ${PREVIEW_COLUMNS} FROM ${table} WHERE ${where}`,
      query_params: params,
      format: 'JSONCompactEachRow',
      abort_signal: job.abort.signal,
    });
    const acc = new Accumulator(module.hash);
    let batch: Row[] = [];
    const flush = (): void => {
      if (batch.length === 0) return;
      const stored = batch.map(storedOf);
      const verdicts = module.evaluateEvents(stored.map(evalEventOfStored));
      for (const [i, row] of batch.entries()) acc.add(row, storedVerdictOf(stored[i]!), verdicts[i]!);
      batch = [];
    };
    for await (const rows of rs.stream<Row>()) {
      for (const r of rows) {
        const row = r.json();
        job.scanned++;
        if (Number(row[21]) !== 1 || row[12] === 'unregistered') acc.notReplayable++;
        else batch.push(row);
        if (batch.length >= BATCH) flush();
      }
      if (job.abort.signal.aborted) throw new Error('cancelled');
    }
    flush();
    const ms = performance.now() - started;
    return acc.result(job.scanned, ms);
  }
}

/** One row as selected: [ts, carrier, tower, event_id, user_id, user_name, app_id, app_name, category, action, up, down, verdict, rule_id, policy_id, severity, remediation, role_ids, region, os, os_version, decision_inputs]. */
type Row = [
  number,
  string,
  string,
  string,
  string,
  string,
  string,
  string,
  string,
  string,
  string,
  string,
  string,
  string,
  string,
  string,
  string,
  string,
  string,
  string,
  string,
  number,
];

/** The columns a replay reads, by name. */
function storedOf(r: Row): StoredDecision {
  return {
    ts: Number(r[0]),
    tower_id: r[2],
    app_name: r[7],
    app_category: r[8],
    action_name: r[9],
    bytes_up: Number(r[10]),
    bytes_down: Number(r[11]),
    verdict: r[12],
    rule_id: r[13],
    policy_id: r[14],
    severity: r[15],
    remediation: r[16],
    role_ids: r[17],
    region: r[18],
    os: r[19],
    os_version: r[20],
  };
}

class Accumulator {
  notReplayable = 0;
  readonly #version: string;
  readonly #changed: Record<PreviewChange, number> = { allow_to_deny: 0, deny_to_allow: 0, severity_changed: 0, remediation_changed: 0 };
  readonly #before: Record<string, number> = {};
  readonly #after: Record<string, number> = {};
  readonly #users = new Map<string, { user_name: string; changed: number }>();
  readonly #apps = new Map<string, { app_name: string; changed: number }>();
  readonly #towers = new Map<string, number>();
  readonly #samples: PreviewResult['samples'] = [];

  constructor(version: string) {
    this.#version = version;
  }

  add(row: Row, before: Verdict, after: Verdict): void {
    if (before.permission === 'deny' && before.remediation !== null) this.#before[before.remediation] = (this.#before[before.remediation] ?? 0) + 1;
    if (after.permission === 'deny' && after.remediation !== null) this.#after[after.remediation] = (this.#after[after.remediation] ?? 0) + 1;
    const change = verdictChange(before, after);
    if (change === null) return;
    this.#changed[change]++;
    const user = this.#users.get(row[4]) ?? { user_name: row[5], changed: 0 };
    user.changed++;
    this.#users.set(row[4], user);
    const app = this.#apps.get(row[6]) ?? { app_name: row[7], changed: 0 };
    app.changed++;
    this.#apps.set(row[6], app);
    this.#towers.set(row[2], (this.#towers.get(row[2]) ?? 0) + 1);
    if (this.#samples.length < SAMPLES) {
      this.#samples.push({
        event_key: `${row[1]}:${row[2]}:${row[3]}`,
        ts: new Date(Number(row[0])).toISOString(),
        user_id: row[4],
        app_name: row[7],
        action: row[9],
        change,
        before,
        after,
      });
    }
  }

  result(scanned: number, ms: number): PreviewResult {
    const top = <V>(m: Map<string, V>, n: (v: V) => number): Array<[string, V]> =>
      [...m].sort((a, b) => n(b[1]) - n(a[1]) || (a[0] < b[0] ? -1 : 1)).slice(0, TOP);
    return {
      events_scanned: scanned,
      not_replayable: this.notReplayable,
      changed: this.#changed,
      remediations: { before: this.#before, after: this.#after },
      top_users: top(this.#users, (v) => v.changed).map(([user_id, v]) => ({ user_id, user_name: v.user_name, changed: v.changed })),
      top_apps: top(this.#apps, (v) => v.changed).map(([app_id, v]) => ({ app_id, app_name: v.app_name, changed: v.changed })),
      top_towers: top(this.#towers, (v) => v).map(([tower_id, changed]) => ({ tower_id, changed })),
      samples: this.#samples,
      policy_version: this.#version,
      duration_ms: Math.round(ms),
      events_per_s: ms > 0 ? Math.round(scanned / (ms / 1000)) : scanned,
    };
  }
}

function view(j: PreviewJob & { abort?: AbortController }): PreviewJob {
  const { abort: _abort, ...rest } = j;
  return { ...rest };
}

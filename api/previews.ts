/**
 * Policy previews (backtests): a draft of an enterprise's policies replayed over the events it
 * stored in a window, with each event's stored decision inputs through the draft's compiled WASM
 * module, and compared with the verdict stored at the time. Exact and fast because ClickHouse
 * groups the window into decision classes (api/previewClasses.ts) and the draft decides one
 * representative per class; a second pass over the changed classes only finds whom, what and
 * where the change hits. Runs as a job on the api node that took it (progress, cancel), shared
 * with the other api nodes through a NATS KV bucket so that any of them answers for it; rows
 * without inputs (before schema 9) are counted as not replayable, never guessed.
 */
import { randomBytes } from 'node:crypto';
import type { KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import type { ClickHouseHandle } from '../core/clickhouse/index.js';
import { tableOf } from '../core/clickhouse/index.js';
import { openKvBucket, reopening } from '../core/nats/index.js';
import { compilePolicies, PolicyModule, verdictChange, type CellChange, type CompiledPolicySet, type Verdict } from '../rules-wasm/index.js';
import { evalEventOfStored, storedVerdictOf, type StoredDecision } from './history.js';
import { decisionClassPlan, type ClassKey, type DecisionClassPlan } from './previewClasses.js';

export type PreviewChange = CellChange;

export interface PreviewResult {
  events_scanned: number;
  not_replayable: number;
  /** Groups of events the draft cannot tell apart: one evaluation each. */
  decision_classes: number;
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

/** Previews running at once on one node; more is a 429. */
export const MAX_RUNNING_PREVIEWS = 2;
const BATCH = 8192;
/** Pass 1 reads the window in time slices of about this many events (progress, cancel), at most MAX_SLICES. */
const ROWS_PER_SLICE = 2_000_000;
const MAX_SLICES = 16;
const TOP = 10;
const SAMPLES = 20;
/** Finished jobs are forgotten after this long. */
const KEEP_MS = 60 * 60 * 1000;

export class PreviewTooBusyError extends Error {}
/** The job is not this node's and the shared board cannot be read. */
export class PreviewBoardUnavailableError extends Error {}

/** Where every api node on the same NATS finds the jobs of the others (a job runs on the node that took it). */
export const PREVIEWS_BUCKET = 'towerwatch-previews';
/** A running job's state is shared at most this often (and at every end). */
const SHARE_EVERY_MS = 250;

export interface PolicyPreviewsOptions {
  cacheDir?: string | undefined;
  now: () => number;
  /** Shares jobs with the other api nodes on this NATS: a GET or DELETE may reach any of them. */
  nc?: NatsConnection;
  /** Least replicas of the bucket. @default 1 */
  replicas?: number;
  /** Events per pass-1 slice. @default 2,000,000 */
  rowsPerSlice?: number;
  log?: (line: string) => void;
}

type LocalJob = PreviewJob & { abort: AbortController; sharedAt: number };

export class PolicyPreviews {
  readonly #ch: ClickHouseHandle;
  readonly #jobs = new Map<string, LocalJob>();
  readonly #cacheDir: string | undefined;
  readonly #now: () => number;
  readonly #rowsPerSlice: number;
  readonly #board: (() => Promise<KV>) | null;
  readonly #log: (line: string) => void;

  constructor(ch: ClickHouseHandle, options: PolicyPreviewsOptions) {
    this.#ch = ch;
    this.#cacheDir = options.cacheDir;
    this.#now = options.now;
    this.#rowsPerSlice = options.rowsPerSlice ?? ROWS_PER_SLICE;
    this.#log = options.log ?? (() => undefined);
    const nc = options.nc;
    this.#board =
      nc === undefined
        ? null
        : reopening(() =>
            openKvBucket(nc, PREVIEWS_BUCKET, {
              history: 1,
              replicas: options.replicas ?? 1,
              ttl: KEEP_MS,
              description: 'towerwatch api: policy preview jobs, for every api node to answer',
              timeoutMs: 1_000,
              retryForMs: 0,
            }),
          );
    // Opened eagerly; while it is away, each node answers for its own jobs (and the next use opens it again).
    this.#board?.().catch((err: unknown) => this.#log(`previews: the shared job bucket is unavailable (${errorText(err)}); jobs stay on their node`));
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
    const job: LocalJob = {
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
      sharedAt: 0,
    };
    this.#jobs.set(job.id, job);
    // Shared before the 202: the next request may reach another node.
    await this.#share(job, true);
    void this.#run(job, compiled, module)
      .then(
        (result) => {
          if (job.status !== 'running') return;
          job.result = result;
          job.status = 'done';
          job.finished_at = this.#now();
        },
        (err: unknown) => {
          if (job.status !== 'running') return;
          job.status = 'failed';
          job.error = errorText(err);
          job.finished_at = this.#now();
        },
      )
      .then(() => this.#share(job, true));
    return view(job);
  }

  /** The job, if it is this enterprise's: this node's, else another node's as last shared. */
  async get(enterpriseId: string, id: string): Promise<PreviewJob | null> {
    const j = this.#jobs.get(id);
    if (j !== undefined) return j.enterprise_id === enterpriseId ? view(j) : null;
    const shared = await this.#shared(id);
    return shared === null || shared.enterprise_id !== enterpriseId ? null : shared;
  }

  /** Stops a running job (on whichever node runs it); a finished one stays as it is. */
  async cancel(enterpriseId: string, id: string): Promise<PreviewJob | null> {
    const j = this.#jobs.get(id);
    if (j !== undefined) {
      if (j.enterprise_id !== enterpriseId) return null;
      if (j.status === 'running') this.#cancelled(j);
      await this.#share(j, true);
      return view(j);
    }
    const shared = await this.#shared(id);
    if (shared === null || shared.enterprise_id !== enterpriseId) return null;
    if (shared.status !== 'running') return shared;
    // The node running it stops at its next slice; until then its job reads as running.
    try {
      await (await this.#board!()).put(cancelKey(id), '1');
    } catch (err) {
      throw new PreviewBoardUnavailableError(`the preview runs on another api node, which cannot be reached now (${errorText(err)})`, { cause: err });
    }
    return { ...shared, status: 'cancelled', finished_at: this.#now() };
  }

  close(): void {
    for (const j of this.#jobs.values()) j.abort.abort();
  }

  #cancelled(j: LocalJob): void {
    j.status = 'cancelled';
    j.finished_at = this.#now();
    j.abort.abort();
  }

  /** Whether another node asked to cancel `j` (a shared board that fails is no request). */
  async #cancelRequested(j: LocalJob): Promise<boolean> {
    if (this.#board === null) return false;
    try {
      return (await (await this.#board()).get(cancelKey(j.id)))?.operation === 'PUT';
    } catch {
      return false;
    }
  }

  /** Puts `j` on the shared board (at most every SHARE_EVERY_MS unless `now`); a failure is logged, not thrown. */
  async #share(j: LocalJob, now = false): Promise<void> {
    if (this.#board === null || (!now && this.#now() - j.sharedAt < SHARE_EVERY_MS)) return;
    j.sharedAt = this.#now();
    try {
      await (await this.#board()).put(jobKey(j.id), JSON.stringify(view(j)));
    } catch (err) {
      this.#log(`previews: could not share job ${j.id} (${errorText(err)}); it is answered by its node only`);
    }
  }

  async #shared(id: string): Promise<PreviewJob | null> {
    if (this.#board === null || !/^pv_[A-Za-z0-9_-]{1,64}$/.test(id)) return null;
    try {
      const entry = await (await this.#board()).get(jobKey(id));
      return entry?.operation === 'PUT' ? (entry.json<PreviewJob>() ?? null) : null;
    } catch (err) {
      throw new PreviewBoardUnavailableError(`the preview is not on this api node, and the other nodes' jobs cannot be read now (${errorText(err)})`, {
        cause: err,
      });
    }
  }

  #forgetOld(): void {
    const now = this.#now();
    for (const [id, j] of this.#jobs) if (j.finished_at !== null && now - j.finished_at > KEEP_MS) this.#jobs.delete(id);
  }

  async #run(job: LocalJob, compiled: CompiledPolicySet, module: PolicyModule): Promise<PreviewResult> {
    const started = performance.now();
    const table = tableOf(this.#ch, 'app_usage');
    const params = { enterprise: job.enterprise_id, from: job.from, to: job.to };
    const count = await this.#ch.client.query({
      query: `SELECT toString(count()) FROM ${table} WHERE ${WINDOW}`,
      query_params: params,
      format: 'JSONCompactEachRow',
      abort_signal: job.abort.signal,
    });
    job.total = Number((await count.json<[string]>())[0]?.[0] ?? 0);

    // Pass 1: the decision classes of the window, a slice of time at a time (progress, and a
    // point to stop at when cancelled), merged by class.
    const plan = decisionClassPlan(compiled.set);
    const classes = new Map<string, DecisionClass>();
    const slices = Math.min(MAX_SLICES, Math.max(1, Math.ceil(job.total / this.#rowsPerSlice)));
    const step = Math.ceil((job.to - job.from) / slices);
    for (let from = job.from; from < job.to; from += step) {
      const rs = await this.#ch.client.query({
        ...decisionClassQuery(this.#ch, plan, job.enterprise_id, from, Math.min(job.to, from + step)),
        format: 'JSONCompactEachRow',
        abort_signal: job.abort.signal,
      });
      for (const r of await rs.json<ClassRow>()) {
        const id = r[18];
        const n = Number(r[19]);
        const seen = classes.get(id);
        if (seen !== undefined) seen.n += n;
        else classes.set(id, { id, key: r.slice(0, 18) as ClassKey, n, rep: r[20] });
        job.scanned += n;
      }
      if (await this.#cancelRequested(job)) this.#cancelled(job);
      if (job.abort.signal.aborted) throw new Error('cancelled');
      await this.#share(job);
    }

    // Events still arriving for the window (late reports) may have been counted by pass 1 only.
    job.total = Math.max(job.total, job.scanned);

    // One evaluation per class, weighted by its events.
    const acc = new Accumulator(compiled.hash);
    const replayable = [...classes.values()].filter((c) => {
      if (c.key[0] !== 1) acc.notReplayable += c.n;
      return c.key[0] === 1;
    });
    const after = module.evaluateEvents(replayable.map((c) => evalEventOfStored(storedOfClass(c))));
    const changed = new Map<string, { change: PreviewChange; before: Verdict; after: Verdict }>();
    for (const [i, c] of replayable.entries()) {
      const before = storedVerdictOf(storedOfClass(c));
      const change = acc.add(c.n, before, after[i]!);
      if (change !== null) changed.set(c.id, { change, before, after: after[i]! });
    }

    // Pass 2, when anything changed: whom, what and where it hits, and examples, from the rows of
    // the changed classes only.
    if (changed.size > 0) {
      const inChanged = `${WINDOW} AND cityHash64(${plan.keys.join(', ')}) IN {c_changed:Array(UInt64)}`;
      const changedParams = { ...params, ...plan.params, c_changed: [...changed.keys()].map((id) => BigInt(id)) };
      const [tops, samples] = await Promise.all([
        this.#ch.client.query({
          query: `SELECT grouping(user_id, app_id, tower_id) AS g, user_id, app_id, tower_id, any(user_name), any(app_name), count() AS c
            FROM ${table} WHERE ${inChanged} GROUP BY GROUPING SETS ((user_id), (app_id), (tower_id))
            ORDER BY g, c DESC, user_id, app_id, tower_id LIMIT ${TOP} BY g`,
          query_params: changedParams,
          format: 'JSONCompactEachRow',
          abort_signal: job.abort.signal,
        }),
        this.#ch.client.query({
          query: `SELECT toUnixTimestamp64Milli(ts), carrier, tower_id, toString(event_id), user_id, app_name, action_name, toString(cityHash64(${plan.keys.join(', ')}))
            FROM ${table} WHERE ${inChanged} LIMIT ${SAMPLES}`,
          query_params: changedParams,
          format: 'JSONCompactEachRow',
          abort_signal: job.abort.signal,
        }),
      ]);
      for (const [g, user, app, tower, userName, appName, c] of await tops.json<[number, string, string, string, string, string, number]>()) {
        if (g === GROUPED_BY.user) acc.topUsers.push({ user_id: user, user_name: userName, changed: Number(c) });
        else if (g === GROUPED_BY.app) acc.topApps.push({ app_id: app, app_name: appName, changed: Number(c) });
        else if (g === GROUPED_BY.tower) acc.topTowers.push({ tower_id: tower, changed: Number(c) });
      }
      for (const [ts, carrier, tower, eventId, user, appName, action, id] of await samples.json<
        [number, string, string, string, string, string, string, string]
      >()) {
        const c = changed.get(id);
        if (c === undefined) continue;
        acc.samples.push({
          event_key: `${carrier}:${tower}:${eventId}`,
          ts: new Date(Number(ts)).toISOString(),
          user_id: user,
          app_name: appName,
          action,
          ...c,
        });
      }
    }
    const ms = performance.now() - started;
    return acc.result(job.scanned, classes.size, ms);
  }
}

const WINDOW = `enterprise_id = {enterprise:String} AND ts >= fromUnixTimestamp64Milli({from:Int64}, 'UTC') AND ts < fromUnixTimestamp64Milli({to:Int64}, 'UTC')`;

/**
 * Pass 1 over [from, to): each decision class of `plan` with its hash, events and one of them.
 * Also what bench measures a preview against (the same statement, alone).
 */
export function decisionClassQuery(
  ch: ClickHouseHandle,
  plan: DecisionClassPlan,
  enterprise: string,
  from: number,
  to: number,
): { query: string; query_params: Record<string, unknown> } {
  const keys = plan.keys.map((_, i) => `k${i}`).join(', ');
  return {
    query: `SELECT ${plan.keys.map((k, i) => `${k} AS k${i}`).join(', ')}, toString(cityHash64(${keys})), count(), any((toUnixTimestamp64Milli(ts), toString(bytes_up), toString(bytes_down)))
      FROM ${tableOf(ch, 'app_usage')} WHERE ${WINDOW} GROUP BY ${keys}`,
    query_params: { ...plan.params, enterprise, from, to },
  };
}

/** What `grouping(user_id, app_id, tower_id)` answers for each grouping set (a 1 bit: a column not grouped by). */
const GROUPED_BY = { user: 0b011, app: 0b101, tower: 0b110 } as const;

/** A pass-1 row: the class key, its hash, its events and one of them as (ts, bytes up, bytes down). */
type ClassRow = [...ClassKey, string, number | string, [number | string, string, string]];

interface DecisionClass {
  id: string;
  key: ClassKey;
  n: number;
  rep: [number | string, string, string];
}

/** A class's representative, as a stored row (the inputs the draft does not test are left empty). */
function storedOfClass(c: DecisionClass): StoredDecision {
  const k = c.key;
  return {
    ts: Number(c.rep[0]),
    tower_id: k[5],
    app_name: k[2],
    app_category: k[3],
    action_name: k[4],
    bytes_up: Number(c.rep[1]),
    bytes_down: Number(c.rep[2]),
    verdict: k[13],
    rule_id: k[14],
    policy_id: k[15],
    severity: k[16],
    remediation: k[17],
    role_ids: k[1],
    region: k[6],
    os: k[7],
    os_version: k[8],
  };
}

class Accumulator {
  notReplayable = 0;
  readonly topUsers: PreviewResult['top_users'] = [];
  readonly topApps: PreviewResult['top_apps'] = [];
  readonly topTowers: PreviewResult['top_towers'] = [];
  readonly samples: PreviewResult['samples'] = [];
  readonly #version: string;
  readonly #changed: Record<PreviewChange, number> = { allow_to_deny: 0, deny_to_allow: 0, severity_changed: 0, remediation_changed: 0 };
  readonly #before: Record<string, number> = {};
  readonly #after: Record<string, number> = {};

  constructor(version: string) {
    this.#version = version;
  }

  /** `n` events that were decided `before` and the draft decides `after`; returns the change. */
  add(n: number, before: Verdict, after: Verdict): PreviewChange | null {
    if (before.permission === 'deny' && before.remediation !== null) this.#before[before.remediation] = (this.#before[before.remediation] ?? 0) + n;
    if (after.permission === 'deny' && after.remediation !== null) this.#after[after.remediation] = (this.#after[after.remediation] ?? 0) + n;
    const change = verdictChange(before, after);
    if (change !== null) this.#changed[change] += n;
    return change;
  }

  result(scanned: number, classes: number, ms: number): PreviewResult {
    return {
      events_scanned: scanned,
      not_replayable: this.notReplayable,
      decision_classes: classes,
      changed: this.#changed,
      remediations: { before: this.#before, after: this.#after },
      top_users: this.topUsers,
      top_apps: this.topApps,
      top_towers: this.topTowers,
      samples: this.samples,
      policy_version: this.#version,
      duration_ms: Math.round(ms),
      events_per_s: ms > 0 ? Math.round(scanned / (ms / 1000)) : scanned,
    };
  }
}

function view(j: LocalJob): PreviewJob {
  const { abort: _abort, sharedAt: _sharedAt, ...rest } = j;
  return { ...rest };
}

const jobKey = (id: string): string => `job.${id}`;
const cancelKey = (id: string): string => `cancel.${id}`;
const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

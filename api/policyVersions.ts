/**
 * Policy versions and their audit trail. A version is an enterprise's whole policy set as the
 * pipeline compiles it, named by the hash stored with every verdict (`policy_version`), so the
 * same policies are the same version. This recorder follows the control plane and writes each
 * change (a version reached from its parent) to ClickHouse (`policy_versions`, no TTL) with its
 * author (the account whose write the api saw last for that enterprise, else `system`), the
 * compiler's input and the control-plane entities it came from (what a rollback restores). A
 * rollback to an earlier version is a change of its own, to that version again. Every api node
 * records; the table keeps one row per change, preferring the one that knows the author.
 */
import type { ClickHouseHandle } from '../core/clickhouse/index.js';
import { tableOf } from '../core/clickhouse/index.js';
import type { ControlPlaneView } from '../core/controlPlane/index.js';
import type { Policy, PolicyRule } from '../core/domain.js';
import type { LogLine } from '../core/log.js';
import {
  enterpriseInputsOf,
  enterpriseLabel,
  enterprisesWithPoliciesChanged,
  normalizePolicies,
  policyVersionOf,
  type PolicyInput,
} from '../rules-wasm/index.js';

/** One change: the policies became `version` (from `parent`) at `created_at`, by `author`. */
export interface PolicyVersion {
  enterprise_id: string;
  version: string;
  /** The version before it ('' for the first one recorded). */
  parent: string;
  author: string;
  created_at: number;
  timezone: string;
  /** The compiler's input: every policy with its rules, roles, app and action names resolved. */
  inputs: PolicyInput[];
  /** The control-plane entities the version was built from. */
  entities: { policies: Policy[]; rules: PolicyRule[] };
}

export interface PolicyVersionsOptions {
  log: LogLine;
  now: () => number;
  /** Changes within this long make one version (a rollback writes several entries). @default 200 */
  debounceMs?: number;
  /** How soon a version that could not be written is tried again. @default 5000 */
  retryMs?: number;
}

/** An author is credited with the versions its writes produce for this long. */
const AUTHOR_WINDOW_MS = 10_000;

export class PolicyVersions {
  readonly #view: ControlPlaneView;
  readonly #ch: ClickHouseHandle;
  readonly #o: Required<PolicyVersionsOptions>;
  readonly #last = new Map<string, string>();
  readonly #authors = new Map<string, { username: string; until: number }>();
  readonly #timers = new Map<string, NodeJS.Timeout>();
  #chain: Promise<void> = Promise.resolve();
  /** The newest recorded version of each enterprise, read once before the first record. */
  #loaded: Promise<void> | null = null;
  #unsubscribe: () => void = () => undefined;
  #closed = false;

  private constructor(view: ControlPlaneView, ch: ClickHouseHandle, options: PolicyVersionsOptions) {
    this.#view = view;
    this.#ch = ch;
    this.#o = { debounceMs: 200, retryMs: 5_000, ...options };
  }

  /**
   * Records the current versions, then follows changes. Nothing here waits on ClickHouse: a
   * version that cannot be written yet (ClickHouse away) is tried again every few seconds.
   */
  static async start(view: ControlPlaneView, ch: ClickHouseHandle, options: PolicyVersionsOptions): Promise<PolicyVersions> {
    const v = new PolicyVersions(view, ch, options);
    v.#unsubscribe = view.onChange((change) => {
      for (const id of enterprisesWithPoliciesChanged(view, change)) v.#schedule(id);
    });
    for (const e of view.list('enterprise')) v.#schedule(e.id, 0);
    return v;
  }

  /** Credits `username` with the versions the next writes to `enterpriseId` produce. */
  noteAuthor(enterpriseId: string, username: string): void {
    this.#authors.set(enterpriseId, { username, until: this.#o.now() + AUTHOR_WINDOW_MS });
  }

  /** Resolves when every change seen so far is recorded. */
  async settled(): Promise<void> {
    while (this.#timers.size > 0) await new Promise((r) => setTimeout(r, this.#o.debounceMs));
    await this.#chain;
  }

  /** The version the enterprise's policies have now (not necessarily recorded yet). */
  current(enterpriseId: string): string {
    return versionOf(this.#view, enterpriseId).version;
  }

  /** The enterprise's changes, newest first. */
  async list(enterpriseId: string): Promise<PolicyVersion[]> {
    return this.#read('enterprise_id = {enterprise:String}', { enterprise: enterpriseId });
  }

  /** A version's content and its first change to it. */
  async get(enterpriseId: string, version: string): Promise<PolicyVersion | null> {
    const all = await this.#read('enterprise_id = {enterprise:String} AND version = {version:String}', { enterprise: enterpriseId, version });
    return all.at(-1) ?? null;
  }

  close(): void {
    this.#closed = true;
    this.#unsubscribe();
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
  }

  async #read(where: string, params: Record<string, unknown>): Promise<PolicyVersion[]> {
    const rs = await this.#ch.client.query({
      // One row per change, before or after the merge: the one that knows its author.
      query: `SELECT enterprise_id, version, parent, argMax(author, author_known) AS author,
          toUnixTimestamp64Milli(min(created_at)) AS created_ms, any(timezone) AS timezone, any(inputs) AS inputs, any(entities) AS entities
        FROM ${tableOf(this.#ch, 'policy_versions')} WHERE ${where}
        GROUP BY enterprise_id, version, parent, bucket ORDER BY created_ms DESC, version`,
      query_params: params,
      format: 'JSONEachRow',
    });
    return (await rs.json<Record<string, string | number>>()).map((r) => ({
      enterprise_id: String(r['enterprise_id']),
      version: String(r['version']),
      parent: String(r['parent']),
      author: String(r['author']),
      created_at: Number(r['created_ms']),
      timezone: String(r['timezone']),
      inputs: JSON.parse(String(r['inputs'])) as PolicyInput[],
      entities: JSON.parse(String(r['entities'])) as PolicyVersion['entities'],
    }));
  }

  #schedule(enterpriseId: string, delayMs = this.#o.debounceMs): void {
    if (this.#closed) return;
    clearTimeout(this.#timers.get(enterpriseId));
    this.#timers.set(
      enterpriseId,
      setTimeout(() => {
        this.#timers.delete(enterpriseId);
        this.#chain = this.#chain
          .then(() => this.#record(enterpriseId))
          .catch((err: unknown) => {
            this.#o.log(
              `api: could not record the policy version of ${enterpriseId} (trying again): ${err instanceof Error ? err.message : String(err)}`,
              'warn',
            );
            this.#schedule(enterpriseId, this.#o.retryMs);
          });
      }, delayMs),
    );
  }

  #load(): Promise<void> {
    this.#loaded ??= (async () => {
      const rs = await this.#ch.client.query({
        query: `SELECT enterprise_id, argMax(version, created_at) AS version FROM ${tableOf(this.#ch, 'policy_versions')} GROUP BY enterprise_id`,
        format: 'JSONEachRow',
      });
      for (const r of await rs.json<{ enterprise_id: string; version: string }>())
        if (!this.#last.has(r.enterprise_id)) this.#last.set(r.enterprise_id, r.version);
    })().catch((err: unknown) => {
      this.#loaded = null;
      throw err;
    });
    return this.#loaded;
  }

  async #record(enterpriseId: string): Promise<void> {
    if (this.#closed || this.#view.enterprise(enterpriseId) === undefined) return;
    await this.#load();
    let current: ReturnType<typeof versionOf>;
    try {
      current = versionOf(this.#view, enterpriseId);
    } catch (err) {
      // The api refuses policies that do not compile; anything else that stored one is logged.
      this.#o.log(`api: the policies of ${enterpriseId} do not compile; no version recorded: ${(err as Error).message}`, 'warn');
      return;
    }
    const parent = this.#last.get(enterpriseId) ?? '';
    if (current.version === parent) return;
    const now = this.#o.now();
    const credited = this.#authors.get(enterpriseId);
    const author = credited !== undefined && credited.until >= now ? credited.username : null;
    const row = {
      enterprise_id: enterpriseId,
      version: current.version,
      parent,
      bucket: Math.floor(now / 10_000),
      author: author ?? 'system',
      author_known: author === null ? 0 : 1,
      created_at: new Date(now).toISOString(),
      timezone: current.timezone,
      inputs: JSON.stringify(current.inputs),
      entities: JSON.stringify({ policies: this.#view.policiesOfEnterprise(enterpriseId), rules: this.#view.rulesOfEnterprise(enterpriseId) }),
    };
    await this.#ch.insertFormatted({
      table: 'policy_versions',
      columns: Object.keys(row),
      format: 'JSONEachRow',
      body: Buffer.from(`${JSON.stringify(row)}\n`),
      settings: { date_time_input_format: 'best_effort' },
    });
    this.#last.set(enterpriseId, current.version);
    this.#o.log(`api: policies of ${enterpriseId} are version ${current.version} (after ${parent || 'none'}, by ${row.author})`);
  }
}

/** An enterprise's policy version now, with what it is built from. */
function versionOf(view: ControlPlaneView, enterpriseId: string): { version: string; inputs: PolicyInput[]; timezone: string } {
  const inputs = enterpriseInputsOf(view, enterpriseId);
  // As the policy registry compiles them, so that the version is the one rows carry.
  const set = normalizePolicies(inputs, { timezone: view.enterprise(enterpriseId)?.timezone });
  return { version: policyVersionOf(set, enterpriseLabel(enterpriseId)), inputs, timezone: set.timezone };
}

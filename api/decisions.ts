/**
 * Policy decisions on request (`POST /decisions`): what the pipeline would decide for a device
 * or user doing an action with an app, from the same compiled module (the same policy version
 * it would store) and the same enrichment. Each api node keeps its own modules in step with the
 * control plane (rules-wasm/policyRegistry.ts), opened on the first decision so that a node
 * that is never asked compiles nothing; compiled modules are shared on disk through the cache.
 */
import type { ControlPlaneView } from '../core/controlPlane/index.js';
import type { LogLine } from '../core/log.js';
import { controlPlaneDirectory, enrichEvent, evalEventOf, type EvalEvent, PolicyRegistry, type UnenforcedReason, type Verdict } from '../rules-wasm/index.js';

export interface DecisionRequest {
  device_id?: string | undefined;
  user_id?: string | undefined;
  app_id: string;
  action_id: string;
  tower_id?: string | undefined;
  /** Epoch ms the action happens at (time-window conditions); default now. */
  at: number;
}

export type Decision =
  | (Verdict & {
      /** The compiled module that decided (the `policy_version` stored with events). */
      policy_version: string;
      /** Why no policy applies (a device not registered to a user), or null. */
      unenforced_reason: UnenforcedReason | null;
    })
  | { error: { code: 'device_not_found' | 'user_not_found'; message: string; details: Record<string, string> } };

export interface DecisionEngineOptions {
  /** Where compiled modules are cached (the pipeline's cache, when they share a data directory). */
  cacheDir?: string | undefined;
  log: LogLine;
}

/** Thrown when an enterprise's policies have no compiled module (they failed to compile). */
export class PoliciesUnavailableError extends Error {}

export class DecisionEngine {
  readonly #view: ControlPlaneView;
  readonly #options: DecisionEngineOptions;
  readonly #directory: ReturnType<typeof controlPlaneDirectory>;
  #registry: Promise<PolicyRegistry> | undefined;
  readonly #errors = new Map<string, Error>();

  constructor(view: ControlPlaneView, options: DecisionEngineOptions) {
    this.#view = view;
    this.#options = options;
    this.#directory = controlPlaneDirectory(view);
  }

  /** Decisions for one enterprise's requests, in their order. */
  async decide(enterpriseId: string, requests: readonly DecisionRequest[]): Promise<Decision[]> {
    const registry = await this.#open();
    // A policy changed a moment ago is compiled before it is answered for.
    await registry.settled();
    const module = registry.module(enterpriseId);
    if (module === undefined) {
      const why = this.#errors.get(enterpriseId);
      throw new PoliciesUnavailableError(`the policies of ${enterpriseId} have no compiled module${why ? `: ${why.message}` : ''}`);
    }
    const out: Decision[] = new Array<Decision>(requests.length);
    const events: EvalEvent[] = [];
    const slots: Array<{ index: number; unenforced: UnenforcedReason | null }> = [];
    for (const [index, r] of requests.entries()) {
      const input = this.#input(enterpriseId, r);
      if ('error' in input) out[index] = input;
      else if (input.event === null) out[index] = { ...unenforcedVerdict(), policy_version: module.hash, unenforced_reason: input.reason };
      else {
        events.push(input.event);
        slots.push({ index, unenforced: null });
      }
    }
    const verdicts = events.length === 0 ? [] : module.evaluateEvents(events);
    for (const [i, slot] of slots.entries()) out[slot.index] = { ...verdicts[i]!, policy_version: module.hash, unenforced_reason: null };
    return out;
  }

  close(): void {
    this.#directory.dispose();
    void this.#registry?.then((r) => r.close()).catch(() => undefined);
  }

  #open(): Promise<PolicyRegistry> {
    this.#registry ??= PolicyRegistry.open(this.#view, {
      cacheDir: this.#options.cacheDir,
      capacity: 1024,
      onCompiled: (id, hash, ms, cached) => {
        this.#errors.delete(id);
        this.#options.log(`api: policies of ${id} compiled for decisions (${hash.slice(0, 12)}, ${cached === false ? `${Math.round(ms)} ms` : 'cached'})`);
      },
      onError: (id, err) => {
        this.#errors.set(id, err);
        this.#options.log(`api: policies of ${id} failed to compile for decisions: ${err.message}`, 'warn');
      },
    }).catch((err: unknown) => {
      this.#registry = undefined; // the next request tries again
      throw err;
    });
    return this.#registry;
  }

  #input(
    enterpriseId: string,
    r: DecisionRequest,
  ): { event: EvalEvent; reason: null } | { event: null; reason: UnenforcedReason } | Extract<Decision, { error: unknown }> {
    const use = { app: r.app_id, action: r.action_id, tower: r.tower_id ?? '', ts: r.at, bytes_up: 0, bytes_down: 0 };
    // Without a tower, no tower or region condition holds.
    const placed = (ev: EvalEvent): EvalEvent => (r.tower_id === undefined ? { ...ev, tower_id: undefined, region: undefined } : ev);
    if (r.device_id !== undefined) {
      const device = this.#view.device(r.device_id);
      // Another enterprise's device is answered as unknown: its existence is not ours to tell.
      if (device === undefined || device.enterprise_id !== enterpriseId) {
        return { error: { code: 'device_not_found', message: `no device '${r.device_id}' in this enterprise`, details: { device_id: r.device_id } } };
      }
      const e = enrichEvent(this.#directory, { ...use, event_id: 0, carrier: '', device: r.device_id });
      return e.enforced ? { event: placed(e.event), reason: null } : { event: null, reason: e.reason };
    }
    const userId = r.user_id ?? '';
    if (this.#view.user(userId, enterpriseId) === undefined) {
      return { error: { code: 'user_not_found', message: `no user '${userId}' in this enterprise`, details: { user_id: userId } } };
    }
    // A user without a device: no OS to match, so OS conditions do not hold.
    return { event: placed(evalEventOf(this.#directory, this.#directory.roleIdsOfUser(userId, enterpriseId), use, undefined)), reason: null };
  }
}

/** What a device no policy applies to gets: allowed, by no rule. */
function unenforcedVerdict(): Verdict {
  return { permission: 'allow', rule_id: null, policy_id: null, severity: null, remediation: null };
}

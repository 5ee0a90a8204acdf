/**
 * The compiled policy module of every enterprise, kept in step with the control plane: a
 * change recompiles the enterprises it touches and swaps each new module in once it is ready,
 * so a batch always runs whole on one version. A policy set that fails to compile leaves the
 * previous module in force and reports why.
 */
import type { ControlPlaneChange, ControlPlaneView } from '../core/controlPlane/index.js';
import { compilePolicies, PolicyCompileError } from './compiler.js';
import { enterprisePolicyInputs, hasShadow } from './controlPlanePolicies.js';
import type { PolicyInput } from './language.js';
import { PolicyModule } from './policyModule.js';

export interface PolicyRegistryOptions {
  cacheDir?: string | undefined;
  /** Where AssemblyScript runs on a cache miss (see CompileOptions). */
  compileWasm?: ((source: string) => Promise<Uint8Array>) | undefined;
  /** Events per evaluation batch the modules are sized for. @default 8192 */
  capacity?: number;
  onCompiled?: (enterpriseId: string, hash: string, ms: number, cached: string | false) => void;
  onError?: (enterpriseId: string, error: Error) => void;
}

/** An enterprise's policies as the compiler takes them, from the control plane. */
export function enterpriseInputsOf(view: ControlPlaneView, enterpriseId: string, options: { shadow?: boolean } = {}): PolicyInput[] {
  return enterprisePolicyInputs(
    {
      policies: view.policiesOfEnterprise(enterpriseId),
      rules: view.rulesOfEnterprise(enterpriseId),
      rolePolicies: view.list('role_policy', enterpriseId),
      apps: view.list('app'),
      actions: view.list('action'),
    },
    options,
  );
}

const POLICY_KINDS = ['policy', 'policy_rule', 'role_policy', 'user_role', 'role', 'enterprise', 'app', 'action'] as const;

/** The enterprises whose compiled policies a control-plane change may alter (none when it touches no policy input). */
export function enterprisesWithPoliciesChanged(view: ControlPlaneView, change: ControlPlaneChange): readonly string[] {
  if (!POLICY_KINDS.some((k) => change.kinds.has(k))) return [];
  // Apps and actions are global and name no enterprise: their names feed every policy set.
  const all = change.kinds.has('app') || change.kinds.has('action');
  return all ? view.list('enterprise').map((e) => e.id) : [...change.enterprises];
}

/** The label an enterprise's module is compiled with (it is part of the policy version). */
export const enterpriseLabel = (enterpriseId: string): string => `enterprise ${enterpriseId}`;

export class PolicyRegistry implements Disposable {
  readonly #view: ControlPlaneView;
  readonly #options: PolicyRegistryOptions;
  readonly #modules = new Map<string, PolicyModule>();
  /** The enterprises with policies or rules in shadow mode: everything compiled as if enforced. */
  readonly #shadow = new Map<string, PolicyModule>();
  readonly #unsubscribe: () => void;
  #pending = new Set<string>();
  #running: Promise<void> = Promise.resolve();

  private constructor(view: ControlPlaneView, options: PolicyRegistryOptions) {
    this.#view = view;
    this.#options = options;
    this.#unsubscribe = view.onChange((change) => this.#onChange(change));
  }

  /** Compiles every enterprise's policies before resolving. */
  static async open(view: ControlPlaneView, options: PolicyRegistryOptions = {}): Promise<PolicyRegistry> {
    const registry = new PolicyRegistry(view, options);
    for (const e of view.list('enterprise')) registry.#pending.add(e.id);
    await registry.settled();
    return registry;
  }

  module(enterpriseId: string): PolicyModule | undefined {
    return this.#modules.get(enterpriseId);
  }

  /** The shadow module (every policy and rule, shadow ones as if enforced), when the enterprise has any in shadow mode. */
  shadowModule(enterpriseId: string): PolicyModule | undefined {
    return this.#shadow.get(enterpriseId);
  }

  versions(): Record<string, string> {
    return Object.fromEntries([...this.#modules].map(([id, m]) => [id, m.hash]));
  }

  /** Resolves when every change seen so far has been compiled (or has failed). */
  settled(): Promise<void> {
    this.#running = this.#running.then(() => this.#drain());
    return this.#running;
  }

  /** Stops following the control plane; the compiled modules stay usable. Idempotent. */
  close(): void {
    this.#unsubscribe();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #onChange(change: ControlPlaneChange): void {
    const touched = enterprisesWithPoliciesChanged(this.#view, change);
    if (touched.length === 0) return;
    for (const id of touched) this.#pending.add(id);
    void this.settled();
  }

  async #drain(): Promise<void> {
    while (this.#pending.size > 0) {
      const batch = [...this.#pending];
      this.#pending = new Set();
      for (const id of batch) await this.#compile(id);
    }
  }

  async #compile(enterpriseId: string): Promise<void> {
    const enterprise = this.#view.enterprise(enterpriseId);
    if (!enterprise) {
      this.#modules.delete(enterpriseId);
      this.#shadow.delete(enterpriseId);
      return;
    }
    const view = this.#view;
    try {
      const options = {
        timezone: enterprise.timezone,
        cacheDir: this.#options.cacheDir,
        label: enterpriseLabel(enterpriseId),
        compileWasm: this.#options.compileWasm,
      };
      const compiled = await compilePolicies(enterpriseInputsOf(view, enterpriseId), options);
      const shadow = hasShadow({ policies: view.policiesOfEnterprise(enterpriseId), rules: view.rulesOfEnterprise(enterpriseId) })
        ? await compilePolicies(enterpriseInputsOf(view, enterpriseId, { shadow: true }), options)
        : null;
      if (shadow === null) this.#shadow.delete(enterpriseId);
      else if (this.#shadow.get(enterpriseId)?.hash !== shadow.hash)
        this.#shadow.set(enterpriseId, await PolicyModule.instantiate(shadow, this.#options.capacity ?? 8192));
      if (this.#modules.get(enterpriseId)?.hash === compiled.hash) return;
      this.#modules.set(enterpriseId, await PolicyModule.instantiate(compiled, this.#options.capacity ?? 8192));
      this.#options.onCompiled?.(enterpriseId, compiled.hash, compiled.stats.compileMs, compiled.stats.cached);
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      if (!(err instanceof PolicyCompileError)) error.message = `internal error compiling: ${error.message}`;
      this.#options.onError?.(enterpriseId, error);
    }
  }
}

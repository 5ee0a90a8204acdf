/**
 * Policy versions (api/policyVersions.ts): a policy's history, one version with what changed
 * from its parent, the semantic diff of any two versions (rules-wasm/diff.ts), and rollback of a
 * policy to what it was in a version (itself a new version, by the account that asked).
 */
import { z } from 'zod';
import { NotFoundError, type ControlPlaneView } from '../../core/controlPlane/index.js';
import type { Policy, PolicyRule } from '../../core/domain.js';
import { diffPolicySets, normalizePolicies, type PolicyDiff } from '../../rules-wasm/index.js';
import { route, type ApiContext, type ApiRoute } from '../context.js';
import { ApiError } from '../errors.js';
import type { PolicyVersion } from '../policyVersions.js';
import { enterpriseQuery, iso, pageInfo, pageQuery, paginate, verdictShape } from '../schemas.js';
import { validatePolicies } from './policies.js';
import { scopeOf } from '../tenancy.js';

const VERSION = /^[0-9a-f]{16}$/;
const versionId = z.string().regex(VERSION, 'must be a policy version (16 hex digits)');
const cellShape = z.strictObject({
  role_id: z.string(),
  app: z.string().nullable(),
  app_category: z.string().nullable(),
  action: z.string().nullable(),
  conditions: z.array(z.record(z.string(), z.unknown())),
  change: z.enum(['allow_to_deny', 'deny_to_allow', 'severity_changed', 'remediation_changed']),
  before: verdictShape,
  after: verdictShape,
});
const changesShape = z.strictObject({ allow_to_deny: z.number(), deny_to_allow: z.number(), severity_changed: z.number(), remediation_changed: z.number() });
const diffShape = z.strictObject({
  cells: z.number(),
  condition_classes: z.number(),
  changes: changesShape,
  changed_cells: z.number(),
  changed: z.array(cellShape),
  truncated: z.boolean(),
});

export function policyVersionRoutes(ctx: ApiContext): ApiRoute[] {
  const { view, versions } = ctx;
  const mustGet = async (enterprise: string, version: string | undefined): Promise<PolicyVersion> => {
    const v = version !== undefined && VERSION.test(version) ? await versions.get(enterprise, version) : null;
    if (v === null) throw new ApiError(404, 'not_found', `no policy version '${version}' in this enterprise`, { version });
    return v;
  };
  return [
    route({
      method: 'get',
      path: '/policies/{policy_id}/versions',
      tag: 'policies',
      summary:
        "The changes of the enterprise's policies that hold this policy, newest first: the version reached, its parent, author, time, and whether this policy changed in it (a rollback is a change back to an earlier version)",
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery, ...pageQuery }),
      response: z.strictObject({
        policy_id: z.string(),
        versions: z.array(
          z.strictObject({
            version: z.string(),
            parent: z.string().nullable(),
            author: z.string(),
            created_at: z.string(),
            changed: z.boolean(),
            current: z.boolean(),
          }),
        ),
        ...pageInfo,
      }),
      handler: async ({ query, params, principal }) => {
        const enterprise = scopeOf(view, principal, query.enterprise_id);
        const policyId = params['policy_id'] ?? '';
        const all = await versions.list(enterprise);
        const byVersion = new Map(all.map((v) => [v.version, v]));
        const policyIn = (v: PolicyVersion | undefined): string | null => {
          const p = v?.inputs.find((i) => i.policy_id === policyId);
          return p === undefined ? null : JSON.stringify(p);
        };
        const holding = all.filter((v) => policyIn(v) !== null);
        if (holding.length === 0 && view.policy(policyId, enterprise) === undefined) {
          throw new ApiError(404, 'not_found', `no policy '${policyId}' in this enterprise`, { policy_id: policyId });
        }
        const current = versions.current(enterprise);
        const rows = holding.map((v) => ({
          version: v.version,
          parent: v.parent === '' ? null : v.parent,
          author: v.author,
          created_at: iso(v.created_at),
          changed: policyIn(v) !== policyIn(byVersion.get(v.parent)),
          // The newest change, when it is what is in force.
          current: v === all[0] && v.version === current,
        }));
        const { items, info } = paginate(rows, query.page, query.limit);
        return { body: { policy_id: policyId, versions: items, ...info } };
      },
    }),
    route({
      method: 'get',
      path: '/policy-versions/{version}',
      tag: 'policies',
      summary: 'One policy version: author, time, parent, every policy and rule as compiled, and what changed from its parent (decision cells)',
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery }),
      response: z.strictObject({
        version: z.string(),
        enterprise_id: z.string(),
        parent: z.string().nullable(),
        author: z.string(),
        created_at: z.string(),
        current: z.boolean(),
        timezone: z.string(),
        policies: z.array(z.unknown()),
        diff_from_parent: diffShape.nullable(),
      }),
      handler: async ({ query, params, principal }) => {
        const enterprise = scopeOf(view, principal, query.enterprise_id);
        const v = await mustGet(enterprise, params['version']);
        const parent = v.parent === '' ? null : await versions.get(enterprise, v.parent);
        return {
          body: {
            version: v.version,
            enterprise_id: v.enterprise_id,
            parent: v.parent === '' ? null : v.parent,
            author: v.author,
            created_at: iso(v.created_at),
            current: v.version === versions.current(enterprise),
            timezone: v.timezone,
            policies: v.inputs,
            diff_from_parent: parent === null ? null : diffBody(diffOf(view, parent, v), 100),
          },
        };
      },
    }),
    route({
      method: 'get',
      path: '/policy-versions/{from}/diff/{to}',
      tag: 'policies',
      summary:
        'What changes from one policy version to another: every decision cell (role × app × action × conditions) whose verdict, severity or remediation differs',
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery, limit: z.coerce.number().int().min(1).max(5000).default(500).describe('changed cells listed') }),
      response: diffShape.extend({ from: z.string(), to: z.string() }),
      handler: async ({ query, params, principal }) => {
        const enterprise = scopeOf(view, principal, query.enterprise_id);
        const from = await mustGet(enterprise, params['from']);
        const to = await mustGet(enterprise, params['to']);
        return { body: { from: from.version, to: to.version, ...diffBody(diffOf(view, from, to), query.limit) } };
      },
    }),
    route({
      method: 'post',
      path: '/policies/{policy_id}/rollback',
      tag: 'policies',
      summary: 'Restore a policy and its rules to what they were in a version (a new version, by you); other policies are untouched',
      access: 'write',
      body: z.strictObject({ ...enterpriseQuery, version: versionId }),
      response: z.strictObject({
        status: z.literal('rolled_back'),
        policy_id: z.string(),
        restored_from: z.string(),
        rules_restored: z.number(),
        rules_removed: z.number(),
      }),
      handler: async ({ body, params, principal }) => {
        const enterprise = scopeOf(view, principal, body.enterprise_id);
        const policyId = params['policy_id'] ?? '';
        const v = await mustGet(enterprise, body.version);
        const policy = v.entities.policies.find((p) => p.id === policyId);
        if (policy === undefined) {
          throw new ApiError(404, 'not_in_version', `policy '${policyId}' did not exist in version ${v.version}`, { policy_id: policyId, version: v.version });
        }
        const author = principal.account.username;
        const at = iso(ctx.now());
        const restored: Policy = { ...policy, updated_at: at, updated_by: author };
        const rules: PolicyRule[] = v.entities.rules.filter((r) => r.policy_id === policyId).map((r) => ({ ...r, updated_at: at, updated_by: author }));
        const stale = view.rulesOfPolicy(policyId, enterprise).filter((r) => !rules.some((x) => x.id === r.id));
        // A role the version named may be gone since.
        validatePolicies(
          view,
          enterprise,
          [...view.policiesOfEnterprise(enterprise).filter((p) => p.id !== policyId), restored],
          [...view.rulesOfEnterprise(enterprise).filter((r) => r.policy_id !== policyId), ...rules],
          'the policy as it was in that version no longer compiles: ',
        );
        ctx.versions.noteAuthor(enterprise, author);
        await ctx.store.upsert('policy', restored);
        for (const r of rules) await ctx.store.upsert('policy_rule', r);
        for (const r of stale) {
          await ctx.store.delete('policy_rule', enterprise, r.id).catch((err: unknown) => {
            if (!(err instanceof NotFoundError)) throw err;
          });
        }
        return { body: { status: 'rolled_back', policy_id: policyId, restored_from: v.version, rules_restored: rules.length, rules_removed: stale.length } };
      },
    }),
  ];
}

/** The diff of two versions, without the cells of a catalog app in a category it is not in. */
function diffOf(view: ControlPlaneView, from: PolicyVersion, to: PolicyVersion): PolicyDiff {
  const categories = new Map<string, string>();
  for (const a of view.list('app')) {
    categories.set(a.id, a.category);
    categories.set(a.name, a.category);
  }
  return diffPolicySets(normalizePolicies(from.inputs, { timezone: from.timezone }), normalizePolicies(to.inputs, { timezone: to.timezone }), {
    appCategory: (app) => categories.get(app),
  });
}

function diffBody(d: PolicyDiff, limit: number): z.infer<typeof diffShape> {
  return {
    cells: d.cells,
    condition_classes: d.condition_classes,
    changes: d.changes,
    changed_cells: d.changed.length,
    changed: d.changed.slice(0, limit),
    truncated: d.changed.length > limit,
  };
}

/**
 * `/policies` and `/policy-rules`: read from the in-memory view, written to the control plane
 * with compare-and-set on the KV revision (`If-Match: "<revision>"` makes a stale write a 412).
 * A write is checked by the rule language first, so nothing the pipeline cannot compile is stored.
 * A policy is deleted by disabling it first (one change of the enforced set, one version), then
 * removing its rules, its role assignments and itself.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { ConflictError, InvalidKeyError, NotFoundError, rolePolicyId, type ControlPlaneView } from '../../core/controlPlane/index.js';
import { PERMISSIONS, POLICY_MODES, REMEDIATIONS, SEVERITIES, type Policy, type PolicyRule } from '../../core/domain.js';
import { conditionsSchema, enterprisePolicyInputs, normalizePolicies, PolicyValidationError } from '../../rules-wasm/index.js';
import { route, type ApiContext, type ApiRoute } from '../context.js';
import { ApiError } from '../errors.js';
import { enterpriseQuery, id, ifMatchRevision, iso, pageInfo, pageQuery, paginate, revisionTag, naturalCompare } from '../schemas.js';
import { scopeOf, viewReplyKey } from '../tenancy.js';

/** The rule language's own schema for `when`. */
const conditions = conditionsSchema;

const ruleShape = z.strictObject({
  policy_rule_id: z.string(),
  policy_id: z.string(),
  role_id: z.string().nullable(),
  app_id: z.string().nullable(),
  app_name: z.string().nullable(),
  app_category: z.string().nullable(),
  action_id: z.string().nullable(),
  action: z.string().nullable(),
  permission: z.enum(PERMISSIONS),
  severity: z.enum(SEVERITIES).nullable(),
  remediation: z.enum(REMEDIATIONS).nullable(),
  when: conditions.nullable(),
  enabled: z.boolean(),
  mode: z.enum(POLICY_MODES),
  updated_at: z.string(),
  updated_by: z.string().nullable(),
  revision: z.number().int(),
});
const policyShape = z.strictObject({
  policy_id: z.string(),
  name: z.string(),
  description: z.string().nullable(),
  default_permission: z.enum(PERMISSIONS),
  default_severity: z.enum(SEVERITIES),
  enabled: z.boolean(),
  mode: z.enum(POLICY_MODES),
  role_ids: z.array(z.string()),
  updated_at: z.string(),
  updated_by: z.string().nullable(),
  revision: z.number().int(),
  rules: z.array(ruleShape),
});

function ruleView(view: ControlPlaneView, r: PolicyRule): z.infer<typeof ruleShape> {
  const appName = r.app_name ?? (r.app_id === undefined ? undefined : view.app(r.app_id)?.name);
  const action = r.action ?? (r.action_id === undefined ? undefined : view.action(r.action_id)?.name);
  return {
    policy_rule_id: r.id,
    policy_id: r.policy_id,
    role_id: r.role_id ?? null,
    app_id: r.app_id ?? null,
    app_name: appName ?? null,
    app_category: r.app_category ?? null,
    action_id: r.action_id ?? null,
    action: action ?? null,
    permission: r.permission,
    severity: r.severity ?? null,
    remediation: r.remediation ?? null,
    when: r.when ?? null,
    enabled: r.enabled,
    mode: r.mode ?? 'enforce',
    updated_at: r.updated_at,
    updated_by: r.updated_by ?? null,
    revision: view.get('policy_rule', r.enterprise_id, r.id)?.revision ?? 0,
  };
}

function policyView(view: ControlPlaneView, p: Policy): z.infer<typeof policyShape> {
  return {
    policy_id: p.id,
    name: p.name,
    description: p.description ?? null,
    default_permission: p.default_permission,
    default_severity: p.default_severity,
    enabled: p.enabled,
    mode: p.mode ?? 'enforce',
    role_ids: view
      .rolesOfPolicy(p.id, p.enterprise_id)
      .map((r) => r.id)
      .sort(),
    updated_at: p.updated_at,
    updated_by: p.updated_by ?? null,
    revision: view.get('policy', p.enterprise_id, p.id)?.revision ?? 0,
    rules: view
      .rulesOfPolicy(p.id, p.enterprise_id)
      .sort((a, b) => naturalCompare(a.id, b.id))
      .map((r) => ruleView(view, r)),
  };
}

/** Checks the enterprise's policies with one policy or rule replaced, as the pipeline will compile them. */
function validateWith(view: ControlPlaneView, enterprise: string, change: { policy?: Policy; rule?: PolicyRule }): void {
  const policies = view.policiesOfEnterprise(enterprise).filter((p) => p.id !== change.policy?.id);
  const rules = view.rulesOfEnterprise(enterprise).filter((r) => r.id !== change.rule?.id);
  validatePolicies(
    view,
    enterprise,
    change.policy === undefined ? policies : [...policies, change.policy],
    change.rule === undefined ? rules : [...rules, change.rule],
  );
}

/**
 * Checks that these policies and rules of the enterprise compile as the pipeline will compile
 * them: as enforced, and with the shadow-mode ones as if enforced.
 * @throws {ApiError} 400 `invalid_policy` with the rule language's issues (after `why`, when given)
 */
export function validatePolicies(view: ControlPlaneView, enterprise: string, policies: Policy[], rules: PolicyRule[], why = ''): void {
  const source = { policies, rules, rolePolicies: view.list('role_policy', enterprise), apps: view.list('app'), actions: view.list('action') };
  try {
    for (const shadow of [false, true])
      normalizePolicies(enterprisePolicyInputs(source, { shadow }), { timezone: view.enterprise(enterprise)?.timezone ?? 'UTC' });
  } catch (err) {
    if (err instanceof PolicyValidationError) throw new ApiError(400, 'invalid_policy', `${why}${err.message}`, err.issues);
    throw err;
  }
}

/** Writes with If-Match (412 when stale) or, without, against the revision the view has. */
async function writeVersioned<K extends 'policy' | 'policy_rule'>(
  ctx: ApiContext,
  kind: K,
  value: K extends 'policy' ? Policy : PolicyRule,
  currentRevision: number | undefined,
  ifMatch: number | undefined,
): Promise<number> {
  try {
    if (currentRevision === undefined) {
      if (ifMatch !== undefined)
        throw new ApiError(412, 'precondition_failed', 'If-Match was given but there is nothing to update', { current_revision: null });
      return await ctx.store.create(kind, value as never);
    }
    if (ifMatch !== undefined && ifMatch !== currentRevision) {
      throw new ApiError(412, 'precondition_failed', `the ${kind.replace('_', ' ')} changed since revision ${ifMatch}; fetch it again`, {
        current_revision: currentRevision,
      });
    }
    return await ctx.store.update(kind, value as never, ifMatch ?? currentRevision);
  } catch (err) {
    if (err instanceof ConflictError) {
      throw ifMatch !== undefined
        ? new ApiError(412, 'precondition_failed', `the ${kind.replace('_', ' ')} changed meanwhile; fetch it again`, { current_revision: null })
        : new ApiError(409, 'conflict', `the ${kind.replace('_', ' ')} was changed by someone else at the same moment; retry`);
    }
    throw err;
  }
}

/**
 * Deletes one entity, guarded by `ifMatch` (412) or else by the revision the view has (409 when
 * someone changed it meanwhile). `gone`: already deleted is fine (a repeated DELETE finishing).
 */
async function deleteGuarded(
  ctx: ApiContext,
  kind: 'policy' | 'policy_rule' | 'role_policy',
  enterprise: string,
  id: string,
  revision: number | undefined,
  ifMatch: number | undefined,
  gone = false,
): Promise<void> {
  if (ifMatch !== undefined && revision !== undefined && ifMatch !== revision) {
    throw new ApiError(412, 'precondition_failed', `the ${kind.replace('_', ' ')} changed since revision ${ifMatch}; fetch it again`, {
      current_revision: revision,
    });
  }
  try {
    await ctx.store.delete(kind, enterprise, id, ifMatch ?? revision);
  } catch (err) {
    if ((err instanceof NotFoundError || err instanceof InvalidKeyError) && gone) return;
    if (err instanceof NotFoundError || err instanceof InvalidKeyError)
      throw new ApiError(404, 'not_found', `no ${kind.replace('_', ' ')} '${id}' in this enterprise`);
    if (err instanceof ConflictError)
      throw new ApiError(409, 'conflict', `the ${kind.replace('_', ' ')} was changed by someone else at the same moment; retry`);
    throw err;
  }
}

const newId = (prefix: string): string => `${prefix}_${randomBytes(6).toString('hex')}`;

export function policyRoutes(ctx: ApiContext): ApiRoute[] {
  const { view } = ctx;
  return [
    route({
      method: 'get',
      path: '/policies',
      cacheKey: (c) => viewReplyKey(ctx.view, c),
      tag: 'policies',
      summary: "Policies of a user (through the user's roles), of a role, or of the whole enterprise, with their rules",
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery, ...pageQuery, user_id: id.optional(), role_id: id.optional() }),
      response: z.strictObject({
        enterprise_id: z.string(),
        user_id: z.string().optional(),
        user_name: z.string().optional(),
        role_id: z.string().optional(),
        role_name: z.string().optional(),
        policies: z.array(policyShape),
        ...pageInfo,
      }),
      handler: ({ query, principal }) => {
        const enterprise = scopeOf(view, principal, query.enterprise_id);
        if (query.user_id !== undefined && query.role_id !== undefined)
          throw new ApiError(400, 'validation_failed', 'give user_id or role_id, not both', [
            { path: 'query.role_id', message: 'conflicts with user_id', code: 'custom' },
          ]);
        let policies: Policy[];
        let about: Record<string, string> = {};
        if (query.user_id !== undefined) {
          const user = view.user(query.user_id, enterprise);
          if (user === undefined) throw new ApiError(404, 'not_found', `no user '${query.user_id}' in this enterprise`, { user_id: query.user_id });
          const seen = new Map<string, Policy>();
          for (const role of view.rolesOfUser(user.id, enterprise)) for (const p of view.policiesOfRole(role.id, enterprise)) seen.set(p.id, p);
          policies = [...seen.values()];
          about = { user_id: user.id, user_name: user.name };
        } else if (query.role_id !== undefined) {
          const role = view.role(query.role_id, enterprise);
          if (role === undefined) throw new ApiError(404, 'not_found', `no role '${query.role_id}' in this enterprise`, { role_id: query.role_id });
          policies = view.policiesOfRole(role.id, enterprise);
          about = { role_id: role.id, role_name: role.name };
        } else {
          policies = view.policiesOfEnterprise(enterprise);
        }
        policies.sort((a, b) => naturalCompare(a.id, b.id));
        const { items, info } = paginate(policies, query.page, query.limit);
        return { body: { enterprise_id: enterprise, ...about, policies: items.map((p) => policyView(view, p)), ...info } };
      },
    }),
    route({
      method: 'get',
      path: '/policies/{policy_id}',
      cacheKey: (c) => viewReplyKey(ctx.view, c),
      tag: 'policies',
      summary: 'One policy with its rules; the ETag is its revision, for If-Match on updates',
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery }),
      response: policyShape,
      handler: ({ query, principal, params }) => {
        const enterprise = scopeOf(view, principal, query.enterprise_id);
        const entry = view.get('policy', enterprise, params['policy_id'] ?? '');
        if (entry === undefined) throw new ApiError(404, 'not_found', `no policy '${params['policy_id']}' in this enterprise`);
        return { body: policyView(view, entry.value), headers: { etag: revisionTag(entry.revision) } };
      },
    }),
    route({
      method: 'post',
      path: '/policies',
      tag: 'policies',
      summary: 'Create a policy, or update the one policy_id names (If-Match: "<revision>" to refuse a stale update)',
      access: 'write',
      body: z.strictObject({
        ...enterpriseQuery,
        policy_id: id.optional(),
        name: z.string().trim().min(1).max(128),
        description: z.string().max(2000).optional(),
        default_permission: z.enum(PERMISSIONS).optional(),
        default_severity: z.enum(SEVERITIES).optional(),
        enabled: z.boolean().optional(),
        mode: z
          .enum(POLICY_MODES)
          .optional()
          .describe('shadow: evaluated on live traffic and stored as shadow verdicts, never enforced; enforce (default) to promote'),
      }),
      response: policyShape.omit({ rules: true }).extend({ status: z.enum(['created', 'updated']) }),
      handler: async ({ body, principal, headers }) => {
        const enterprise = scopeOf(view, principal, body.enterprise_id);
        const policyId = body.policy_id ?? newId('policy');
        // Ids are per enterprise (KV key policy.<enterprise>.<id>): another enterprise's policy of
        // the same id is neither a conflict nor anything this reply may hint at.
        const current = view.get('policy', enterprise, policyId);
        const before = current?.value;
        const policy: Policy = {
          id: policyId,
          enterprise_id: enterprise,
          name: body.name,
          default_permission: body.default_permission ?? before?.default_permission ?? 'allow',
          default_severity: body.default_severity ?? before?.default_severity ?? 'medium',
          enabled: body.enabled ?? before?.enabled ?? true,
          mode: body.mode ?? before?.mode ?? 'enforce',
          updated_at: iso(ctx.now()),
          updated_by: principal.account.username,
        };
        const description = body.description ?? before?.description;
        if (description !== undefined) policy.description = description;
        validateWith(view, enterprise, { policy });
        ctx.versions.noteAuthor(enterprise, principal.account.username);
        const revision = await writeVersioned(ctx, 'policy', policy, current?.revision, ifMatchRevision(headers));
        const { rules: _rules, ...shown } = policyView(view, policy);
        return {
          status: current === undefined ? 201 : 200,
          headers: { etag: revisionTag(revision) },
          body: { ...shown, revision, status: current === undefined ? 'created' : 'updated' },
        };
      },
    }),
    route({
      method: 'get',
      path: '/policy-rules',
      cacheKey: (c) => viewReplyKey(ctx.view, c),
      tag: 'policies',
      summary: 'Rules of one policy',
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery, ...pageQuery, policy_id: id }),
      response: z.strictObject({ policy_id: z.string(), policy_name: z.string(), policy_rules: z.array(ruleShape), ...pageInfo }),
      handler: ({ query, principal }) => {
        const enterprise = scopeOf(view, principal, query.enterprise_id);
        const policy = view.policy(query.policy_id, enterprise);
        if (policy === undefined) throw new ApiError(404, 'not_found', `no policy '${query.policy_id}' in this enterprise`, { policy_id: query.policy_id });
        const rules = view.rulesOfPolicy(policy.id, enterprise).sort((a, b) => naturalCompare(a.id, b.id));
        const { items, info } = paginate(rules, query.page, query.limit);
        return { body: { policy_id: policy.id, policy_name: policy.name, policy_rules: items.map((r) => ruleView(view, r)), ...info } };
      },
    }),
    route({
      method: 'post',
      path: '/policy-rules',
      tag: 'policies',
      summary: 'Add a rule, or update the one that policy_rule_id names (or that has the same policy, role, app and action); If-Match for a guarded update',
      access: 'write',
      body: z.strictObject({
        ...enterpriseQuery,
        policy_rule_id: id.optional(),
        policy_id: id,
        role_id: id.optional(),
        app_id: id.optional(),
        app_category: z.string().min(1).max(64).optional(),
        action_id: id.optional(),
        permission: z.enum(PERMISSIONS),
        severity: z.enum(SEVERITIES).optional(),
        remediation: z.enum(REMEDIATIONS).optional(),
        when: conditions.optional(),
        enabled: z.boolean().optional(),
        mode: z
          .enum(POLICY_MODES)
          .optional()
          .describe('shadow: evaluated on live traffic and stored as shadow verdicts, never enforced; enforce (default) to promote'),
      }),
      response: ruleShape.extend({ status: z.enum(['created', 'updated']) }),
      handler: async ({ body, principal, headers }) => {
        const enterprise = scopeOf(view, principal, body.enterprise_id);
        const unknown = (field: string, value: string): ApiError =>
          new ApiError(
            400,
            'unknown_reference',
            `no ${field.replace('_id', '')} '${value}'${field === 'app_id' || field === 'action_id' ? '' : ' in this enterprise'}`,
            { field, id: value },
          );
        if (view.policy(body.policy_id, enterprise) === undefined) throw unknown('policy_id', body.policy_id);
        if (body.role_id !== undefined && view.role(body.role_id, enterprise) === undefined) throw unknown('role_id', body.role_id);
        if (body.app_id !== undefined && view.app(body.app_id) === undefined) throw unknown('app_id', body.app_id);
        if (body.action_id !== undefined && view.action(body.action_id) === undefined) throw unknown('action_id', body.action_id);
        // Rule ids are per enterprise too (policy_rule.<enterprise>.<id>): only this enterprise's rules are looked at.
        let current = body.policy_rule_id === undefined ? undefined : view.get('policy_rule', enterprise, body.policy_rule_id);
        if (current !== undefined && current.value.policy_id !== body.policy_id) {
          throw new ApiError(400, 'validation_failed', `rule '${current.value.id}' belongs to policy '${current.value.policy_id}'`, [
            { path: 'body.policy_id', message: 'a rule cannot move to another policy', code: 'custom' },
          ]);
        }
        if (body.policy_rule_id === undefined) {
          // The brief's upsert: the same policy, role, app and action means the same rule.
          const same = view
            .rulesOfPolicy(body.policy_id, enterprise)
            .find(
              (r) =>
                r.role_id === body.role_id &&
                r.app_id === body.app_id &&
                r.action_id === body.action_id &&
                r.app_category === body.app_category &&
                r.when === undefined &&
                body.when === undefined,
            );
          if (same !== undefined) current = view.get('policy_rule', enterprise, same.id);
        }
        const rule: PolicyRule = {
          id: current?.value.id ?? body.policy_rule_id ?? newId('rule'),
          enterprise_id: enterprise,
          policy_id: body.policy_id,
          permission: body.permission,
          enabled: body.enabled ?? current?.value.enabled ?? true,
          mode: body.mode ?? current?.value.mode ?? 'enforce',
          updated_at: iso(ctx.now()),
          updated_by: principal.account.username,
        };
        for (const k of ['role_id', 'app_id', 'app_category', 'action_id', 'severity', 'remediation', 'when'] as const) {
          if (body[k] !== undefined) (rule as unknown as Record<string, unknown>)[k] = body[k];
        }
        validateWith(view, enterprise, { rule });
        ctx.versions.noteAuthor(enterprise, principal.account.username);
        const revision = await writeVersioned(ctx, 'policy_rule', rule, current?.revision, ifMatchRevision(headers));
        return {
          status: current === undefined ? 201 : 200,
          headers: { etag: revisionTag(revision) },
          body: { ...ruleView(view, rule), revision, status: current === undefined ? 'created' : 'updated' },
        };
      },
    }),
    route({
      method: 'del',
      path: '/policy-rules/{policy_rule_id}',
      tag: 'policies',
      summary: 'Delete a rule (If-Match: "<revision>" to refuse if it changed); the pipeline stops enforcing it within seconds',
      access: 'write',
      query: z.strictObject({ ...enterpriseQuery }),
      successStatus: 204,
      handler: async ({ query, principal, params, headers }) => {
        const enterprise = scopeOf(view, principal, query.enterprise_id);
        const ruleId = params['policy_rule_id'] ?? '';
        const current = view.get('policy_rule', enterprise, ruleId);
        if (current === undefined) throw new ApiError(404, 'not_found', `no rule '${ruleId}' in this enterprise`, { policy_rule_id: ruleId });
        validatePolicies(
          view,
          enterprise,
          view.policiesOfEnterprise(enterprise),
          view.rulesOfEnterprise(enterprise).filter((r) => r.id !== ruleId),
        );
        ctx.versions.noteAuthor(enterprise, principal.account.username);
        await deleteGuarded(ctx, 'policy_rule', enterprise, ruleId, current.revision, ifMatchRevision(headers));
        return { status: 204 };
      },
    }),
    route({
      method: 'del',
      path: '/policies/{policy_id}',
      tag: 'policies',
      summary:
        'Delete a policy with its rules and role assignments (If-Match: "<revision>" to refuse if it changed). It is disabled first, so enforcement drops it in one change; a DELETE that fails midway leaves it disabled, and repeating it finishes',
      access: 'write',
      query: z.strictObject({ ...enterpriseQuery }),
      successStatus: 204,
      handler: async ({ query, principal, params, headers }) => {
        const enterprise = scopeOf(view, principal, query.enterprise_id);
        const policyId = params['policy_id'] ?? '';
        const current = view.get('policy', enterprise, policyId);
        if (current === undefined) throw new ApiError(404, 'not_found', `no policy '${policyId}' in this enterprise`, { policy_id: policyId });
        const ifMatch = ifMatchRevision(headers);
        ctx.versions.noteAuthor(enterprise, principal.account.username);
        let revision = current.revision;
        if (current.value.enabled) {
          const disabled: Policy = { ...current.value, enabled: false, updated_at: iso(ctx.now()), updated_by: principal.account.username };
          revision = await writeVersioned(ctx, 'policy', disabled, current.revision, ifMatch);
        } else if (ifMatch !== undefined && ifMatch !== current.revision) {
          throw new ApiError(412, 'precondition_failed', `the policy changed since revision ${ifMatch}; fetch it again`, {
            current_revision: current.revision,
          });
        }
        for (const r of view.rulesOfPolicy(policyId, enterprise)) await deleteGuarded(ctx, 'policy_rule', enterprise, r.id, undefined, undefined, true);
        for (const rp of view.list('role_policy', enterprise).filter((x) => x.policy_id === policyId)) {
          await deleteGuarded(ctx, 'role_policy', enterprise, rolePolicyId(rp.role_id, rp.policy_id), undefined, undefined, true);
        }
        await deleteGuarded(ctx, 'policy', enterprise, policyId, revision, undefined, true);
        return { status: 204 };
      },
    }),
    route({
      method: 'get',
      path: '/apps',
      cacheKey: (c) => viewReplyKey(ctx.view, c),
      tag: 'policies',
      summary: 'The app catalog rules name (by id, name or category), by name; `app_categories` lists every category',
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery, ...pageQuery, category: z.string().min(1).max(64).optional() }),
      response: z.strictObject({
        apps: z.array(z.strictObject({ app_id: z.string(), name: z.string(), category: z.string() })),
        app_categories: z.array(z.string()),
        ...pageInfo,
      }),
      handler: ({ query, principal }) => {
        scopeOf(view, principal, query.enterprise_id);
        const all = view.list('app');
        const apps = all.filter((a) => query.category === undefined || a.category === query.category).sort((a, b) => naturalCompare(a.name, b.name));
        const { items, info } = paginate(apps, query.page, query.limit);
        return {
          body: {
            apps: items.map((a) => ({ app_id: a.id, name: a.name, category: a.category })),
            app_categories: [...new Set(all.map((a) => a.category))].sort(),
            ...info,
          },
        };
      },
    }),
    route({
      method: 'get',
      path: '/actions',
      cacheKey: (c) => viewReplyKey(ctx.view, c),
      tag: 'policies',
      summary: 'The action catalog rules name (by id or name), by name',
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery, ...pageQuery }),
      response: z.strictObject({ actions: z.array(z.strictObject({ action_id: z.string(), name: z.string() })), ...pageInfo }),
      handler: ({ query, principal }) => {
        scopeOf(view, principal, query.enterprise_id);
        const { items, info } = paginate(
          view.list('action').sort((a, b) => naturalCompare(a.name, b.name)),
          query.page,
          query.limit,
        );
        return { body: { actions: items.map((a) => ({ action_id: a.id, name: a.name })), ...info } };
      },
    }),
    route({
      method: 'get',
      path: '/os-versions',
      cacheKey: (c) => viewReplyKey(ctx.view, c),
      tag: 'policies',
      summary: "The operating systems and versions of the enterprise's devices, with how many devices run each: what an OS condition can name",
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery }),
      response: z.strictObject({
        os: z.array(z.strictObject({ name: z.string(), devices: z.number(), versions: z.array(z.strictObject({ version: z.string(), devices: z.number() })) })),
      }),
      handler: ({ query, principal }) => {
        const enterprise = scopeOf(view, principal, query.enterprise_id);
        const byOs = new Map<string, Map<string, number>>();
        for (const d of view.devicesOfEnterprise(enterprise)) {
          const versions = byOs.get(d.os) ?? new Map<string, number>();
          versions.set(d.os_version, (versions.get(d.os_version) ?? 0) + 1);
          byOs.set(d.os, versions);
        }
        const os = [...byOs]
          .map(([name, versions]) => ({
            name,
            devices: [...versions.values()].reduce((a, b) => a + b, 0),
            versions: [...versions].sort((a, b) => naturalCompare(a[0], b[0])).map(([version, devices]) => ({ version, devices })),
          }))
          .sort((a, b) => b.devices - a.devices || naturalCompare(a.name, b.name));
        return { body: { os } };
      },
    }),
  ];
}

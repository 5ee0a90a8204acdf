/**
 * `/policy-previews`: what a draft of the policies would have done to the events stored in a
 * window (api/previews.ts). The draft is policies in the shape `GET /policies` returns them
 * (read-only fields accepted and ignored), replacing the enterprise's policies of the same ids
 * (or all of them with `replace_all`). A job: 202 at once, then `GET` for progress and result,
 * `DELETE` to cancel.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { PERMISSIONS, POLICY_MODES, REMEDIATIONS, SEVERITIES, type Policy, type PolicyRule, type RolePolicy } from '../../core/domain.js';
import { conditionsSchema, enterpriseLabel, enterprisePolicyInputs, PolicyCompileError } from '../../rules-wasm/index.js';
import { route, type ApiContext, type ApiRoute } from '../context.js';
import { ApiError } from '../errors.js';
import { MAX_RUNNING_PREVIEWS, PreviewBoardUnavailableError, PreviewTooBusyError, type PolicyPreviews, type PreviewJob } from '../previews.js';
import { enterpriseQuery, id, iso, resolveRange, timeRangeQuery } from '../schemas.js';
import { scopeOf } from '../tenancy.js';

const nullable = <T extends z.ZodType>(t: T) => t.nullable().optional();
const draftRule = z.strictObject({
  policy_rule_id: id.optional(),
  policy_id: id.optional(),
  role_id: nullable(id),
  app_id: nullable(id),
  app_name: nullable(z.string().min(1).max(128)),
  app_category: nullable(z.string().min(1).max(64)),
  action_id: nullable(id),
  action: nullable(z.string().min(1).max(128)),
  permission: z.enum(PERMISSIONS),
  severity: nullable(z.enum(SEVERITIES)),
  remediation: nullable(z.enum(REMEDIATIONS)),
  when: nullable(conditionsSchema),
  enabled: z.boolean().optional(),
  mode: z.enum(POLICY_MODES).optional(),
  // As GET /policies returns them; ignored.
  updated_at: z.string().optional(),
  updated_by: z.string().nullable().optional(),
  revision: z.number().optional(),
});
const draftPolicy = z.strictObject({
  policy_id: id,
  name: z.string().trim().min(1).max(128),
  description: z.string().nullable().optional(),
  default_permission: z.enum(PERMISSIONS).optional(),
  default_severity: z.enum(SEVERITIES).optional(),
  enabled: z.boolean().optional(),
  mode: z.enum(POLICY_MODES).optional(),
  role_ids: z.array(id).max(64).default([]),
  rules: z.array(draftRule).max(10_000).default([]),
  updated_at: z.string().optional(),
  updated_by: z.string().nullable().optional(),
  revision: z.number().optional(),
});

const jobShape = z.strictObject({
  preview_id: z.string(),
  status: z.enum(['running', 'done', 'failed', 'cancelled']),
  from: z.string(),
  to: z.string(),
  events_total: z.number(),
  events_scanned: z.number(),
  progress: z.number(),
  started_at: z.string(),
  finished_at: z.string().nullable(),
  error: z.string().nullable(),
  result: z.record(z.string(), z.unknown()).nullable(),
});

function jobBody(j: PreviewJob): z.infer<typeof jobShape> {
  return {
    preview_id: j.id,
    status: j.status,
    from: iso(j.from),
    to: iso(j.to),
    events_total: j.total,
    events_scanned: j.scanned,
    progress: j.status === 'done' ? 1 : j.total > 0 ? Math.min(1, j.scanned / j.total) : 0,
    started_at: iso(j.started_at),
    finished_at: j.finished_at === null ? null : iso(j.finished_at),
    error: j.error,
    result: j.result as unknown as Record<string, unknown> | null,
  };
}

export function previewRoutes(ctx: ApiContext, previews: PolicyPreviews): ApiRoute[] {
  const { view } = ctx;
  /** The job (on any api node), or a 404; 503 when another node's jobs cannot be read. */
  const found = async (job: Promise<PreviewJob | null>, previewId: string | undefined): Promise<PreviewJob> => {
    let j: PreviewJob | null;
    try {
      j = await job;
    } catch (err) {
      if (err instanceof PreviewBoardUnavailableError) throw new ApiError(503, 'previews_unavailable', err.message, { preview_id: previewId ?? '' });
      throw err;
    }
    if (j === null) throw new ApiError(404, 'not_found', `no preview '${previewId ?? ''}' of this enterprise`, { preview_id: previewId ?? '' });
    return j;
  };
  return [
    route({
      method: 'post',
      path: '/policy-previews',
      tag: 'policies',
      summary:
        'Replay the events stored in a window (default the last 24 h) through a draft of the policies: how many verdicts change, whom and what it hits, the remediations it would have triggered. A job: 202, then GET for progress and result',
      access: 'history',
      successStatus: 202,
      bodyLimitBytes: 2 * 1024 * 1024,
      body: z.strictObject({
        ...enterpriseQuery,
        ...timeRangeQuery,
        policies: z.array(draftPolicy).min(1).max(500),
        replace_all: z.boolean().default(false).describe('the draft is the whole policy set (default: it replaces the policies of the same ids)'),
      }),
      response: jobShape,
      handler: async ({ body, principal }) => {
        const enterprise = scopeOf(view, principal, body.enterprise_id);
        const { from, to } = resolveRange(body, ctx.now(), '24h');
        const draftIds = new Set(body.policies.map((p) => p.policy_id));
        const keep = (policyId: string): boolean => !body.replace_all && !draftIds.has(policyId);
        const policies: Policy[] = view.policiesOfEnterprise(enterprise).filter((p) => keep(p.id));
        const rules: PolicyRule[] = view.rulesOfEnterprise(enterprise).filter((r) => keep(r.policy_id));
        const rolePolicies: RolePolicy[] = view.list('role_policy', enterprise).filter((rp) => keep(rp.policy_id));
        for (const p of body.policies) {
          policies.push({
            id: p.policy_id,
            enterprise_id: enterprise,
            name: p.name,
            default_permission: p.default_permission ?? 'allow',
            default_severity: p.default_severity ?? 'medium',
            enabled: p.enabled ?? true,
            mode: p.mode ?? 'enforce',
            updated_at: '',
          });
          for (const role of p.role_ids) rolePolicies.push({ enterprise_id: enterprise, role_id: role, policy_id: p.policy_id, assigned_at: '' });
          p.rules.forEach((r, i) => {
            const rule: PolicyRule = {
              // A new rule of the draft has no id yet: one the rule language accepts, unique per policy and place.
              id: r.policy_rule_id ?? `draft_${createHash('sha256').update(p.policy_id).digest('hex').slice(0, 12)}_${i + 1}`,
              enterprise_id: enterprise,
              policy_id: p.policy_id,
              permission: r.permission,
              enabled: r.enabled ?? true,
              mode: r.mode ?? 'enforce',
              updated_at: '',
            };
            for (const k of ['role_id', 'app_id', 'app_name', 'app_category', 'action_id', 'action', 'severity', 'remediation', 'when'] as const) {
              const v = r[k];
              if (v !== null && v !== undefined) (rule as unknown as Record<string, unknown>)[k] = v;
            }
            rules.push(rule);
          });
        }
        const inputs = enterprisePolicyInputs({ policies, rules, rolePolicies, apps: view.list('app'), actions: view.list('action') });
        try {
          const job = await previews.start({
            enterpriseId: enterprise,
            inputs,
            timezone: view.enterprise(enterprise)?.timezone,
            from,
            to,
            label: enterpriseLabel(enterprise),
          });
          return { status: 202, body: jobBody(job) };
        } catch (err) {
          if (err instanceof PolicyCompileError) throw new ApiError(400, 'invalid_policy', err.message, err.issues);
          if (err instanceof PreviewTooBusyError) throw new ApiError(429, 'too_many_previews', err.message, { running: MAX_RUNNING_PREVIEWS });
          throw err;
        }
      },
    }),
    route({
      method: 'get',
      path: '/policy-previews/{preview_id}',
      tag: 'policies',
      summary: 'A preview: progress while it runs, the result when done',
      access: 'history',
      query: z.strictObject({ ...enterpriseQuery }),
      response: jobShape,
      handler: async ({ query, params, principal }) => {
        const id = params['preview_id'] ?? '';
        return { body: jobBody(await found(previews.get(scopeOf(view, principal, query.enterprise_id), id), id)) };
      },
    }),
    route({
      method: 'del',
      path: '/policy-previews/{preview_id}',
      tag: 'policies',
      summary: 'Cancel a running preview (a finished one is left as it is)',
      access: 'history',
      query: z.strictObject({ ...enterpriseQuery }),
      response: jobShape,
      handler: async ({ query, params, principal }) => {
        const id = params['preview_id'] ?? '';
        return { body: jobBody(await found(previews.cancel(scopeOf(view, principal, query.enterprise_id), id), id)) };
      },
    }),
  ];
}

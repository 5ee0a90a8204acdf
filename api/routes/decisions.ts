/**
 * `POST /decisions`: the brief's "the frontend validates user actions against the policies".
 * One request, or up to 1,000 as `{ requests: [...] }`, answered from the compiled module the
 * pipeline enforces (api/decisions.ts).
 */
import { z } from 'zod';
import { route, type ApiContext, type ApiRoute } from '../context.js';
import { type DecisionEngine, PoliciesUnavailableError, type DecisionRequest } from '../decisions.js';
import { ApiError } from '../errors.js';
import { enterpriseQuery, id, isoTime, parseQueryTime } from '../schemas.js';
import { scopeOf } from '../tenancy.js';

export const MAX_DECISIONS_PER_REQUEST = 1000;

const at = z
  .string()
  .max(40)
  .refine((s) => parseQueryTime(s) !== null, 'must be ISO 8601 (2026-01-02T03:04:05Z) or epoch milliseconds, between 2000-01-01 and 2100-01-01')
  .describe('when the action happens (ISO 8601 or epoch ms; time-window conditions); default now');

const requestShape = z
  .strictObject({
    device_id: id.optional().describe('the device (its owner, roles and OS); or user_id'),
    user_id: id.optional().describe('the user (roles only: OS conditions do not hold); or device_id'),
    app_id: id,
    action_id: id,
    tower_id: id.optional().describe('where (tower and region conditions); absent: none of them hold'),
    at: at.optional(),
  })
  .refine((r) => (r.device_id === undefined) !== (r.user_id === undefined), { message: 'give exactly one of device_id and user_id', path: ['device_id'] });

const decisionShape = z.union([
  z.strictObject({
    permission: z.enum(['allow', 'deny']),
    rule_id: z.string().nullable(),
    policy_id: z.string().nullable(),
    severity: z.string().nullable(),
    remediation: z.string().nullable(),
    policy_version: z.string(),
    unenforced_reason: z.string().nullable(),
  }),
  z.strictObject({ error: z.strictObject({ code: z.string(), message: z.string(), details: z.record(z.string(), z.string()) }) }),
]);

export function decisionRoutes(ctx: ApiContext, engine: DecisionEngine): ApiRoute[] {
  return [
    route({
      method: 'post',
      path: '/decisions',
      tag: 'policies',
      summary: `Would the policies allow this? One request, or up to ${MAX_DECISIONS_PER_REQUEST} as { requests: [...] }: the verdict the pipeline would store, with its policy version`,
      access: 'read',
      // 1,000 requests of the longest ids and times fit.
      bodyLimitBytes: 512 * 1024,
      query: z.strictObject({ ...enterpriseQuery }),
      body: z.union([
        requestShape,
        z.strictObject({
          requests: z.array(requestShape).min(1).max(MAX_DECISIONS_PER_REQUEST),
        }),
      ]),
      response: z.union([decisionShape, z.strictObject({ decisions: z.array(decisionShape), evaluated_at: isoTime })]),
      handler: async ({ query, body, principal }) => {
        const enterprise = scopeOf(ctx.view, principal, query.enterprise_id);
        const now = ctx.now();
        const asked = 'requests' in body ? body.requests : [body];
        const requests: DecisionRequest[] = asked.map((r) => ({
          device_id: r.device_id,
          user_id: r.user_id,
          app_id: r.app_id,
          action_id: r.action_id,
          tower_id: r.tower_id,
          at: r.at === undefined ? now : (parseQueryTime(r.at) ?? now),
        }));
        let decisions;
        try {
          decisions = await engine.decide(enterprise, requests);
        } catch (err) {
          if (err instanceof PoliciesUnavailableError) throw new ApiError(503, 'policies_unavailable', err.message, { enterprise_id: enterprise });
          throw err;
        }
        if ('requests' in body) return { body: { decisions, evaluated_at: new Date(now).toISOString() } };
        const [one] = decisions;
        if (one !== undefined && 'error' in one) throw new ApiError(404, one.error.code, one.error.message, one.error.details);
        return { body: one! };
      },
    }),
  ];
}

/** `GET /dashboard/shadow`: what policies and rules in shadow mode would have done (api/history.ts shadowSummary). */
import { z } from 'zod';
import { route, type ApiContext, type ApiRoute } from '../context.js';
import { shadowSummary } from '../history.js';
import { enterpriseQuery, id, iso, resolveRange, timeRangeQuery } from '../schemas.js';
import { scopeOf } from '../tenancy.js';

export function shadowRoutes(ctx: ApiContext): ApiRoute[] {
  return [
    route({
      method: 'get',
      path: '/dashboard/shadow',
      tag: 'dashboard',
      summary:
        'What policies and rules in shadow mode would have done (default: the last 24 h): events they decided, how many would have been denied or allowed otherwise, by rule, whom and what it hits',
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery, ...timeRangeQuery, policy_id: id.optional().describe('only the shadow decisions of this policy') }),
      response: z.strictObject({
        from: z.string(),
        to: z.string(),
        evaluated: z.number(),
        would_deny: z.number(),
        would_allow: z.number(),
        by_rule: z.array(z.strictObject({ policy_id: z.string(), rule_id: z.string().nullable(), would_deny: z.number(), would_allow: z.number() })),
        top_users: z.array(z.strictObject({ user_id: z.string(), user_name: z.string(), differing: z.number() })),
        top_apps: z.array(z.strictObject({ app_id: z.string(), app_name: z.string(), differing: z.number() })),
      }),
      handler: async ({ query, principal }) => {
        const enterprise = scopeOf(ctx.view, principal, query.enterprise_id);
        const { from, to } = resolveRange(query, ctx.now(), '24h');
        const summary = await shadowSummary(ctx.clickhouse, { enterprise, from, to, policyId: query.policy_id });
        return { body: { from: iso(from), to: iso(to), ...summary } };
      },
    }),
  ];
}

/** `/auth/login`, `/auth/refresh`, `/auth/logout`. */
import { z } from 'zod';
import { route, type ApiContext, type ApiRoute } from '../context.js';
import { ApiError } from '../errors.js';
import { ROLE_ACCESS, visibleEnterprises } from '../tenancy.js';

const tokenPair = z.strictObject({
  access_token: z.string(),
  refresh_token: z.string(),
  token_type: z.literal('Bearer'),
  expires_in: z.number().int(),
});

export function authRoutes(ctx: ApiContext): ApiRoute[] {
  return [
    route({
      method: 'post',
      path: '/auth/login',
      tag: 'auth',
      summary: 'Sign in with a console account: an access token (15 min) and a refresh token (7 days)',
      access: 'public',
      body: z.strictObject({ username: z.string().min(1).max(256), password: z.string().min(1).max(1024) }),
      response: tokenPair,
      handler: async ({ body, remoteAddress }) => {
        await ctx.limits.beforeLogin(body.username, remoteAddress);
        try {
          const tokens = await ctx.auth.login(body.username, body.password);
          await ctx.limits.loginSucceeded(body.username, remoteAddress);
          return { body: tokens };
        } catch (err) {
          if (err instanceof ApiError && err.status === 401) await ctx.limits.loginFailed(body.username, remoteAddress);
          throw err;
        }
      },
    }),
    route({
      method: 'post',
      path: '/auth/refresh',
      tag: 'auth',
      summary: 'Trade a refresh token for a new pair; each refresh token works once (reuse revokes the session)',
      access: 'public',
      body: z.strictObject({ refresh_token: z.string().min(1).max(4096) }),
      response: tokenPair,
      handler: async ({ body }) => ({ body: await ctx.auth.refresh(body.refresh_token) }),
    }),
    route({
      method: 'get',
      path: '/me',
      tag: 'auth',
      summary: 'The signed-in account: role, what it may do, and the enterprises it may see (a carrier operator picks one)',
      access: 'read',
      response: z.strictObject({
        username: z.string(),
        display_name: z.string(),
        role: z.string(),
        enterprise_id: z.string().nullable(),
        carrier_id: z.string().nullable(),
        can: z.strictObject({ read: z.boolean(), history: z.boolean(), write: z.boolean() }),
        enterprises: z.array(z.strictObject({ id: z.string(), name: z.string(), plan_id: z.string(), auto_remediation: z.boolean() })),
        session_expires_at: z.string(),
      }),
      handler: ({ principal }) => {
        const a = principal.account;
        const access = ROLE_ACCESS[a.role];
        return {
          body: {
            username: a.username,
            display_name: a.display_name,
            role: a.role,
            enterprise_id: a.enterprise_id,
            carrier_id: a.carrier_id,
            can: { read: access.has('read'), history: access.has('history'), write: access.has('write') },
            enterprises: visibleEnterprises(ctx.view, principal)
              .map((e) => ({ id: e.id, name: e.name, plan_id: e.plan_id, auto_remediation: ctx.view.planOfEnterprise(e.id)?.auto_remediation === true }))
              .sort((x, y) => x.name.localeCompare(y.name)),
            session_expires_at: new Date(principal.expiresAt * 1000).toISOString(),
          },
        };
      },
    }),
    route({
      method: 'post',
      path: '/auth/logout',
      tag: 'auth',
      summary: 'End the session (of the refresh token given, or of the calling access token)',
      access: 'read',
      body: z.strictObject({ refresh_token: z.string().min(1).max(4096).optional() }).optional(),
      successStatus: 204,
      handler: async ({ body, principal }) => {
        const family = body?.refresh_token === undefined ? principal.family : await ctx.auth.familyOfRefreshToken(body.refresh_token);
        await ctx.auth.logout(family);
        return { status: 204 };
      },
    }),
  ];
}

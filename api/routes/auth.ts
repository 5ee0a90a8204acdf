/** `/auth/login`, `/auth/refresh`, `/auth/logout`. */
import { z } from 'zod';
import type { ApiContext, ApiRoute } from '../context.js';
import { ApiError } from '../errors.js';

const tokenPair = z.strictObject({
  access_token: z.string(),
  refresh_token: z.string(),
  token_type: z.literal('Bearer'),
  expires_in: z.number().int(),
});

export function authRoutes(ctx: ApiContext): ApiRoute[] {
  return [
    {
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
          await ctx.limits.loginSucceeded(body.username);
          return { body: tokens };
        } catch (err) {
          if (err instanceof ApiError && err.status === 401) await ctx.limits.loginFailed(body.username);
          throw err;
        }
      },
    },
    {
      method: 'post',
      path: '/auth/refresh',
      tag: 'auth',
      summary: 'Trade a refresh token for a new pair; each refresh token works once (reuse revokes the session)',
      access: 'public',
      body: z.strictObject({ refresh_token: z.string().min(1).max(4096) }),
      response: tokenPair,
      handler: async ({ body }) => ({ body: await ctx.auth.refresh(body.refresh_token) }),
    },
    {
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
    },
  ];
}

/** `/dashboard/metrics`, `/dashboard/alerts` and `/app-usage`: history from ClickHouse. */
import { z } from 'zod';
import { SEVERITIES } from '../../core/domain.js';
import { alertShape, alertView } from '../alerts.js';
import { route, type ApiContext, type ApiRoute } from '../context.js';
import { ApiError } from '../errors.js';
import { dashboardMetrics, recentAlerts, userAppUsage } from '../history.js';
import { enterpriseQuery, id, iso, pageInfo, pageOf, pageQuery, resolveRange, timeRangeQuery } from '../schemas.js';
import { ShortCache } from '../shortCache.js';
import { scopeOf } from '../tenancy.js';

const severityList = z
  .union([z.enum(SEVERITIES), z.array(z.enum(SEVERITIES))])
  .transform((v) => (Array.isArray(v) ? v : [v]))
  .optional()
  .describe('one or more (repeat the parameter)');

export function dashboardRoutes(ctx: ApiContext): ApiRoute[] {
  const towerLocation = (towerId: string): string => ctx.view.tower(towerId)?.location ?? '';
  const metricsCache = new ShortCache<Awaited<ReturnType<typeof dashboardMetrics>>>(ctx.metricsCacheMs);
  // Every open dashboard of an enterprise asks for the same first page: one query (two, with the
  // count) per second serves them all. A stale answer is served at most one more TTL, while the
  // refresh runs. (Measured: 50 clients over 500k violations on embedded chdb queued behind one
  // another at ~50 req/s, p99 1 s, each request ~20 ms of engine time.)
  const alertsCache = new ShortCache<Awaited<ReturnType<typeof recentAlerts>>>(ctx.alertsCacheMs, 1000, 2);
  return [
    route({
      method: 'get',
      path: '/dashboard/metrics',
      tag: 'dashboard',
      summary: 'App usage and violations over a time range: per minute/hour by verdict, top apps, users, towers, policies, and who violated what where',
      access: 'read',
      query: z.strictObject({
        ...enterpriseQuery,
        ...timeRangeQuery,
        bucket: z.enum(['minute', 'hour']).optional().describe('default: minute up to 6 h, hour beyond'),
        top: z.coerce.number().int().min(1).max(100).default(10),
      }),
      response: z.strictObject({
        enterprise_id: z.string(),
        from: z.string(),
        to: z.string(),
        bucket: z.enum(['minute', 'hour']),
        totals: z.strictObject({
          events: z.number(),
          violations: z.number(),
          by_verdict: z.strictObject({ allow: z.number(), deny: z.number(), unregistered: z.number() }),
        }),
        series: z.array(
          z.strictObject({ t: z.string(), events: z.number(), allowed: z.number(), denied: z.number(), unregistered: z.number(), violations: z.number() }),
        ),
        top_apps: z.array(z.strictObject({ app_id: z.string(), app_name: z.string(), events: z.number(), violations: z.number() })),
        top_users: z.array(z.strictObject({ user_id: z.string(), user_name: z.string(), violations: z.number() })),
        top_towers: z.array(
          z.strictObject({
            tower_id: z.string(),
            location: z.string(),
            lat: z.number().nullable(),
            lon: z.number().nullable(),
            events: z.number(),
            violations: z.number(),
          }),
        ),
        top_policies: z.array(z.strictObject({ policy_id: z.string(), policy_name: z.string(), severity: z.string(), violations: z.number() })),
        violations_by: z.array(
          z.strictObject({
            user_id: z.string(),
            user_name: z.string(),
            app_id: z.string(),
            app_name: z.string(),
            tower_id: z.string(),
            tower_location: z.string(),
            policy_id: z.string(),
            policy_name: z.string(),
            violations: z.number(),
          }),
        ),
      }),
      handler: async ({ query, principal }) => {
        const enterprise = scopeOf(ctx.view, principal, query.enterprise_id);
        const { from, to } = resolveRange(query, ctx.now(), '1h');
        const bucket = query.bucket ?? (to - from <= 6 * 3600e3 ? 'minute' : 'hour');
        if (bucket === 'minute' && to - from > 7 * 24 * 3600e3) {
          throw new ApiError(400, 'validation_failed', 'minute buckets cover at most 7 days; use bucket=hour', [
            { path: 'query.bucket', message: 'too many minutes', code: 'custom' },
          ]);
        }
        // Identical requests share one answer for metricsCacheMs, then get it while one refresh runs
        // (a range ending "now" is at most a few seconds behind).
        const key = JSON.stringify([enterprise, query.from, query.to, query.range, bucket, query.top]);
        const m = await metricsCache.get(key, ctx.now(), () => dashboardMetrics(ctx.clickhouse, { enterprise, from, to, bucket, top: query.top }));
        return {
          body: {
            enterprise_id: enterprise,
            from: iso(from),
            to: iso(to),
            bucket,
            ...m,
            top_towers: m.top_towers.map((t) => {
              const tower = ctx.view.tower(t.tower_id);
              return { ...t, location: tower?.location ?? '', lat: tower?.lat ?? null, lon: tower?.lon ?? null };
            }),
            violations_by: m.violations_by.map((v) => ({ ...v, tower_location: towerLocation(v.tower_id) })),
          },
        };
      },
    }),
    route({
      method: 'get',
      path: '/dashboard/alerts',
      tag: 'dashboard',
      summary: 'Recent violations, newest first (default: the last 24 hours)',
      access: 'read',
      query: z.strictObject({
        ...enterpriseQuery,
        ...timeRangeQuery,
        ...pageQuery,
        severity: severityList,
        user_id: id.optional(),
        app_id: id.optional(),
        tower_id: id.optional(),
        device_id: z.string().min(1).max(128).optional(),
        policy_id: id.optional(),
      }),
      response: z.strictObject({ enterprise_id: z.string(), alerts: z.array(alertShape), ...pageInfo }),
      handler: async ({ query, principal }) => {
        const enterprise = scopeOf(ctx.view, principal, query.enterprise_id);
        const { from, to } = resolveRange(query, ctx.now(), '24h');
        const filters = {
          severity: query.severity,
          user_id: query.user_id,
          app_id: query.app_id,
          tower_id: query.tower_id,
          device_id: query.device_id,
          policy_id: query.policy_id,
        };
        const key = JSON.stringify([enterprise, query.from, query.to, query.range, query.page, query.limit, filters]);
        const { alerts, total } = await alertsCache.get(key, ctx.now(), () =>
          recentAlerts(ctx.clickhouse, { enterprise, from, to, limit: query.limit, offset: (query.page - 1) * query.limit, filters }),
        );
        return { body: { enterprise_id: enterprise, alerts: alerts.map(alertView), ...pageOf(query.page, query.limit, total) } };
      },
    }),
    route({
      method: 'get',
      path: '/app-usage',
      tag: 'dashboard',
      summary: "One user's app usage log, newest first (default: the last 24 hours); analysts and admins",
      access: 'history',
      query: z.strictObject({ ...enterpriseQuery, ...timeRangeQuery, ...pageQuery, user_id: id }),
      response: z.strictObject({
        user_id: z.string(),
        user_name: z.string(),
        app_usage: z.array(
          z.strictObject({
            app_id: z.string(),
            app_name: z.string(),
            action_id: z.string(),
            action: z.string(),
            device_id: z.string(),
            cell_tower_id: z.string(),
            cell_tower_location: z.string(),
            carrier: z.string(),
            verdict: z.string(),
            policy_name: z.string(),
            severity: z.string(),
            bytes_up: z.number(),
            bytes_down: z.number(),
            timestamp: z.string(),
          }),
        ),
        ...pageInfo,
      }),
      handler: async ({ query, principal }) => {
        const enterprise = scopeOf(ctx.view, principal, query.enterprise_id);
        const user = ctx.view.user(query.user_id, enterprise);
        if (user === undefined) throw new ApiError(404, 'not_found', `no user '${query.user_id}' in this enterprise`, { user_id: query.user_id });
        const { from, to } = resolveRange(query, ctx.now(), '24h');
        const { usage, total } = await userAppUsage(ctx.clickhouse, {
          enterprise,
          user: user.id,
          from,
          to,
          limit: query.limit,
          offset: (query.page - 1) * query.limit,
        });
        return {
          body: {
            user_id: user.id,
            user_name: user.name,
            app_usage: usage.map((u) => ({
              app_id: u.app_id,
              app_name: u.app_name,
              action_id: u.action_id,
              action: u.action_name,
              device_id: u.device_id,
              cell_tower_id: u.tower_id,
              cell_tower_location: towerLocation(u.tower_id),
              carrier: u.carrier,
              verdict: u.verdict,
              policy_name: u.policy_name,
              severity: u.severity,
              bytes_up: u.bytes_up,
              bytes_down: u.bytes_down,
              timestamp: iso(u.ts),
            })),
            ...pageOf(query.page, query.limit, total),
          },
        };
      },
    }),
  ];
}

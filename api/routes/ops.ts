/** `/healthz`, `/readyz`, `/metrics`, `/openapi.json`: for load balancers, Prometheus and clients. */
import { z } from 'zod';
import type { ApiContext, ApiRoute } from '../context.js';
import { ApiError } from '../errors.js';
import type { ApiMetrics } from '../metrics.js';

const READY_TIMEOUT_MS = 2000;

function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_r, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

async function check(fn: () => Promise<unknown>): Promise<{ ok: boolean; latency_ms: number; error?: string }> {
  const t = performance.now();
  try {
    await within(fn(), READY_TIMEOUT_MS);
    return { ok: true, latency_ms: Math.round((performance.now() - t) * 10) / 10 };
  } catch (err) {
    return { ok: false, latency_ms: Math.round(performance.now() - t), error: err instanceof Error ? err.message : String(err) };
  }
}

const checkShape = z.strictObject({ ok: z.boolean(), latency_ms: z.number(), error: z.string().optional() });

export function opsRoutes(ctx: ApiContext, metrics: ApiMetrics, openapi: () => unknown): ApiRoute[] {
  return [
    {
      method: 'get',
      path: '/healthz',
      tag: 'operations',
      summary: 'Liveness: the process serves requests',
      access: 'public',
      response: z.strictObject({ status: z.literal('ok') }),
      handler: () => ({ body: { status: 'ok' } }),
    },
    {
      method: 'get',
      path: '/readyz',
      tag: 'operations',
      summary: 'Readiness: NATS and ClickHouse answer (503 with the failing check otherwise)',
      access: 'public',
      response: z.strictObject({ status: z.literal('ready'), checks: z.strictObject({ nats: checkShape, clickhouse: checkShape, control_plane: checkShape }) }),
      handler: async () => {
        const [nats, clickhouse] = await Promise.all([check(() => ctx.nc.flush()), check(() => ctx.clickhouse.client.query({ query: 'SELECT 1', format: 'JSONEachRow' }).then((r) => r.json()))]);
        const control_plane = { ok: ctx.view.count('enterprise') >= 0, latency_ms: 0 };
        const checks = { nats, clickhouse, control_plane };
        if (!nats.ok || !clickhouse.ok) throw new ApiError(503, 'not_ready', 'a dependency is not answering', checks);
        return { body: { status: 'ready', checks } };
      },
    },
    {
      method: 'get',
      path: '/metrics',
      tag: 'operations',
      summary: 'Prometheus metrics (text exposition format)',
      access: 'public',
      handler: async () => ({ text: { body: await metrics.registry.metrics(), contentType: metrics.registry.contentType } }),
    },
    {
      method: 'get',
      path: '/openapi.json',
      tag: 'operations',
      summary: 'This OpenAPI 3.1 document',
      access: 'public',
      handler: () => ({ body: openapi() }),
    },
  ];
}

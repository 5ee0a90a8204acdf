/**
 * `/outputs`: an enterprise's notification outputs (core/outputs.ts), for its admins. A webhook
 * takes the enterprise's violations at or above its minimum severity (and those whose rule asks
 * for `remediation: notify`), within its filters, one per (user, app, action) per dedup window,
 * signed with the output's secret. The secret is shown once, when the output is made or its
 * secret rotated. `GET /outputs/{id}/deliveries` is the output's recent delivery log.
 */
import type { KV } from '@nats-io/kv';
import { z } from 'zod';
import { SEVERITIES } from '../../core/domain.js';
import {
  decodeStoredOutput,
  DEFAULT_DEDUP_WINDOW_SECONDS,
  type Delivery,
  DELIVERY_HISTORY,
  MAX_DEDUP_WINDOW_SECONDS,
  newOutputId,
  newOutputSecret,
  openDeliveriesBucket,
  openOutputsBucket,
  type Output,
  OUTPUT_FORMATS,
  outputKey,
} from '../../core/outputs.js';
import { kvValues, reopening } from '../../core/nats/index.js';
import { route, type ApiContext, type ApiRoute } from '../context.js';
import { ApiError } from '../errors.js';
import { enterpriseQuery, id, iso, pageInfo, pageQuery, paginate } from '../schemas.js';
import { scopeOf } from '../tenancy.js';

const MAX_OUTPUTS_PER_ENTERPRISE = 50;
const MAX_FILTER_IDS = 100;

const webhookUrl = z
  .string()
  .max(2048)
  .url()
  // (refinements run after a failed .url() too: parse safely)
  .refine((u) => /^https?:$/.test(URL.canParse(u) ? new URL(u).protocol : ''), { message: 'must be an http or https URL' });
const filterIds = z.array(id).max(MAX_FILTER_IDS);
const filtersShape = z.strictObject({ app_ids: filterIds.default([]), tower_ids: filterIds.default([]), policy_ids: filterIds.default([]) });

const outputShape = z.strictObject({
  output_id: z.string(),
  name: z.string(),
  type: z.enum(['webhook']),
  url: z.string(),
  format: z.enum(OUTPUT_FORMATS),
  min_severity: z.enum(SEVERITIES),
  filters: z.strictObject({ app_ids: z.array(z.string()), tower_ids: z.array(z.string()), policy_ids: z.array(z.string()) }),
  dedup_window_seconds: z.number().int(),
  enabled: z.boolean(),
  /** The secret's last 4 characters, to tell secrets apart. */
  secret_hint: z.string(),
  created_at: z.string(),
  created_by: z.string(),
  updated_at: z.string(),
});
const withSecret = outputShape.extend({ secret: z.string().describe('the HMAC-SHA256 key; shown only now') });

const deliveryShape = z.strictObject({
  delivery_id: z.string(),
  alert_id: z.string(),
  status: z.enum(['delivered', 'failed', 'dropped']),
  attempts: z.number().int(),
  http_status: z.number().int().nullable(),
  error: z.string().nullable(),
  suppressed: z.number().int(),
  at: z.string(),
  duration_ms: z.number(),
});

function outputView(o: Output): z.infer<typeof outputShape> {
  return {
    output_id: o.output_id,
    name: o.name,
    type: o.type,
    url: o.url,
    format: o.format,
    min_severity: o.min_severity,
    filters: o.filters,
    dedup_window_seconds: o.dedup_window_seconds,
    enabled: o.enabled,
    secret_hint: `…${o.secret.slice(-4)}`,
    created_at: iso(o.created_at),
    created_by: o.created_by,
    updated_at: iso(o.updated_at),
  };
}

const editable = {
  name: z.string().trim().min(1).max(100),
  url: webhookUrl,
  format: z.enum(OUTPUT_FORMATS),
  min_severity: z.enum(SEVERITIES),
  filters: filtersShape,
  dedup_window_seconds: z.number().int().min(0).max(MAX_DEDUP_WINDOW_SECONDS),
  enabled: z.boolean(),
};

export function outputRoutes(ctx: ApiContext, options: { replicas: number }): ApiRoute[] {
  const opened = {
    outputs: reopening(() => openOutputsBucket(ctx.nc, options.replicas, { retryForMs: 0 })),
    deliveries: reopening(() => openDeliveriesBucket(ctx.nc, options.replicas, { retryForMs: 0 })),
  };
  /** Opened on first use; a failure is a 503 and the next request tries again. */
  const bucket = async (name: 'outputs' | 'deliveries'): Promise<KV> => {
    try {
      return await opened[name]();
    } catch (err) {
      throw new ApiError(503, 'outputs_unavailable', `the outputs cannot be read now: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
  /** The stored entry: `output` is null when it does not read as an output (written by hand, or by a newer version). */
  const entryOf = async (enterprise: string, outputId: string): Promise<{ output: Output | null; revision: number }> => {
    const entry = /^out_[A-Za-z0-9_-]{1,32}$/.test(outputId) ? await (await bucket('outputs')).get(outputKey(enterprise, outputId)) : null;
    if (entry?.operation !== 'PUT') throw new ApiError(404, 'not_found', `no output '${outputId}' in this enterprise`, { output_id: outputId });
    return { output: decodeStoredOutput(entry.value), revision: entry.revision };
  };
  const mustGet = async (enterprise: string, outputId: string): Promise<{ output: Output; revision: number }> => {
    const { output, revision } = await entryOf(enterprise, outputId);
    if (output === null) {
      ctx.log(`api: output ${outputKey(enterprise, outputId)} in KV does not read as an output`, 'warn');
      throw new ApiError(500, 'output_unreadable', `output '${outputId}' is stored in a form this server cannot read; DELETE it and create it again`, {
        output_id: outputId,
      });
    }
    return { output, revision };
  };
  const list = async (enterprise: string): Promise<Output[]> => {
    // Unreadable entries are left out of lists (GET one names it; DELETE removes it).
    const stored = await kvValues(await bucket('outputs'), `${enterprise}.>`, (e) => decodeStoredOutput(e.value));
    const out = stored.filter((o): o is Output => o !== null);
    return out.sort((a, b) => a.created_at - b.created_at || (a.output_id < b.output_id ? -1 : 1));
  };
  /** Filters name things that exist, and policies of this enterprise. */
  const checkFilters = (enterprise: string, f: z.infer<typeof filtersShape>): void => {
    const unknown = (field: string, ref: string): never => {
      throw new ApiError(400, 'unknown_reference', `no ${field.replace(/_ids$/, '')} '${ref}'${field === 'policy_ids' ? ' in this enterprise' : ''}`, {
        field: `filters.${field}`,
        id: ref,
      });
    };
    for (const a of f.app_ids) if (ctx.view.app(a) === undefined) unknown('app_ids', a);
    for (const t of f.tower_ids) if (ctx.view.tower(t) === undefined) unknown('tower_ids', t);
    for (const p of f.policy_ids) if (ctx.view.policy(p, enterprise) === undefined) unknown('policy_ids', p);
  };
  const save = async (o: Output, revision: number | null): Promise<void> => {
    const kv = await bucket('outputs');
    try {
      if (revision === null) await kv.create(outputKey(o.enterprise_id, o.output_id), JSON.stringify(o));
      else await kv.update(outputKey(o.enterprise_id, o.output_id), JSON.stringify(o), revision);
    } catch (err) {
      throw new ApiError(409, 'conflict', `the output changed meanwhile; try again (${err instanceof Error ? err.message : String(err)})`);
    }
  };

  return [
    route({
      method: 'get',
      path: '/outputs',
      tag: 'outputs',
      summary: "The enterprise's notification outputs (admins)",
      access: 'write',
      query: z.strictObject({ ...enterpriseQuery, ...pageQuery }),
      response: z.strictObject({ outputs: z.array(outputShape), ...pageInfo }),
      handler: async ({ query, principal }) => {
        const enterprise = scopeOf(ctx.view, principal, query.enterprise_id);
        const { items, info } = paginate(await list(enterprise), query.page, query.limit);
        return { body: { outputs: items.map(outputView), ...info } };
      },
    }),
    route({
      method: 'post',
      path: '/outputs',
      tag: 'outputs',
      summary: 'Add a webhook output (201, with its signing secret, shown only now)',
      access: 'write',
      successStatus: 201,
      body: z.strictObject({
        ...enterpriseQuery,
        name: editable.name,
        type: z.enum(['webhook']).default('webhook'),
        url: editable.url,
        format: editable.format.default('json'),
        min_severity: editable.min_severity.default('high'),
        filters: filtersShape.default({ app_ids: [], tower_ids: [], policy_ids: [] }),
        dedup_window_seconds: editable.dedup_window_seconds.default(DEFAULT_DEDUP_WINDOW_SECONDS),
        enabled: editable.enabled.default(true),
      }),
      response: withSecret,
      handler: async ({ body, principal }) => {
        const enterprise = scopeOf(ctx.view, principal, body.enterprise_id);
        checkFilters(enterprise, body.filters);
        if ((await list(enterprise)).length >= MAX_OUTPUTS_PER_ENTERPRISE) {
          throw new ApiError(409, 'limit_reached', `an enterprise has at most ${MAX_OUTPUTS_PER_ENTERPRISE} outputs`, { limit: MAX_OUTPUTS_PER_ENTERPRISE });
        }
        const now = ctx.now();
        const output: Output = {
          output_id: newOutputId(),
          enterprise_id: enterprise,
          name: body.name,
          type: body.type,
          url: body.url,
          format: body.format,
          secret: newOutputSecret(),
          min_severity: body.min_severity,
          filters: body.filters,
          dedup_window_seconds: body.dedup_window_seconds,
          enabled: body.enabled,
          created_at: now,
          created_by: principal.account.username,
          updated_at: now,
        };
        await save(output, null);
        return { status: 201, body: { ...outputView(output), secret: output.secret } };
      },
    }),
    route({
      method: 'get',
      path: '/outputs/{output_id}',
      tag: 'outputs',
      summary: 'One notification output (admins)',
      access: 'write',
      query: z.strictObject({ ...enterpriseQuery }),
      response: outputShape,
      handler: async ({ query, principal, params }) => ({
        body: outputView((await mustGet(scopeOf(ctx.view, principal, query.enterprise_id), params['output_id'] ?? '')).output),
      }),
    }),
    route({
      method: 'patch',
      path: '/outputs/{output_id}',
      tag: 'outputs',
      summary: 'Change an output; `rotate_secret: true` makes a new secret (returned only in this reply)',
      access: 'write',
      body: z.strictObject({
        ...enterpriseQuery,
        name: editable.name.optional(),
        url: editable.url.optional(),
        format: editable.format.optional(),
        min_severity: editable.min_severity.optional(),
        filters: filtersShape.optional(),
        dedup_window_seconds: editable.dedup_window_seconds.optional(),
        enabled: editable.enabled.optional(),
        rotate_secret: z.boolean().optional(),
      }),
      response: outputShape.extend({ secret: z.string().optional() }),
      handler: async ({ body, principal, params }) => {
        const enterprise = scopeOf(ctx.view, principal, body.enterprise_id);
        const { output, revision } = await mustGet(enterprise, params['output_id'] ?? '');
        const { enterprise_id: _, rotate_secret, ...changes } = body;
        if (changes.filters !== undefined) checkFilters(enterprise, changes.filters);
        const next: Output = {
          ...output,
          ...Object.fromEntries(Object.entries(changes).filter(([, v]) => v !== undefined)),
          ...(rotate_secret === true ? { secret: newOutputSecret() } : {}),
          updated_at: ctx.now(),
        };
        await save(next, revision);
        return { body: { ...outputView(next), ...(rotate_secret === true ? { secret: next.secret } : {}) } };
      },
    }),
    route({
      method: 'del',
      path: '/outputs/{output_id}',
      tag: 'outputs',
      summary: 'Remove an output (its delivery log goes with it)',
      access: 'write',
      query: z.strictObject({ ...enterpriseQuery }),
      successStatus: 204,
      handler: async ({ query, principal, params }) => {
        const enterprise = scopeOf(ctx.view, principal, query.enterprise_id);
        // An unreadable entry can be removed too.
        const outputId = params['output_id'] ?? '';
        await entryOf(enterprise, outputId);
        await (await bucket('outputs')).delete(outputKey(enterprise, outputId));
        await (await bucket('deliveries')).purge(outputKey(enterprise, outputId));
        return { status: 204 };
      },
    }),
    route({
      method: 'get',
      path: '/outputs/{output_id}/deliveries',
      tag: 'outputs',
      summary: `An output's last deliveries (up to ${DELIVERY_HISTORY}, the newest first): delivered, failed after its retries, or dropped`,
      access: 'write',
      query: z.strictObject({ ...enterpriseQuery }),
      response: z.strictObject({ output_id: z.string(), deliveries: z.array(deliveryShape) }),
      handler: async ({ query, principal, params }) => {
        const enterprise = scopeOf(ctx.view, principal, query.enterprise_id);
        const { output } = await mustGet(enterprise, params['output_id'] ?? '');
        const deliveries: Delivery[] = [];
        for await (const e of await (await bucket('deliveries')).history({ key: outputKey(enterprise, output.output_id) })) {
          if (e.operation === 'PUT') deliveries.push(e.json<Delivery>());
        }
        deliveries.sort((a, b) => b.at - a.at);
        return { body: { output_id: output.output_id, deliveries: deliveries.map((d) => ({ ...d, at: iso(d.at) })) } };
      },
    }),
  ];
}

/**
 * `/blocks`: what the towers have been told to stop carrying, as the remediation worker keeps it
 * (core/blocks.ts): one block per device (or device and app) and tower, with how many alerts it
 * answered. `POST` asks for one by hand and `DELETE` lifts one: a block or unblock request on
 * the REMEDIATION queue, executed at the tower by the worker, which then records the block or
 * removes it.
 */
import { randomUUID } from 'node:crypto';
import type { KV } from '@nats-io/kv';
import { Packr } from 'msgpackr';
import { z } from 'zod';
import {
  type Block,
  BLOCK_SCOPES,
  WIDE_SCOPE_SUBJECT,
  BLOCKS_BUCKET,
  blockIdOf,
  blockKeyOfId,
  blockStatus,
  blockTowers,
  decodeStoredBlock,
  unblockRequestOf,
} from '../../core/blocks.js';
import { remedialActionId, remediationMsgId, type RemediationRequest } from '../../core/remediation.js';
import { kvValues, openKvBucket, publishWithRetry, remediationSubject, reopening } from '../../core/nats/index.js';
import { route, type ApiContext, type ApiRoute } from '../context.js';
import { ApiError } from '../errors.js';
import { enterpriseQuery, iso, pageInfo, pageQuery, paginate } from '../schemas.js';
import { scopeOf } from '../tenancy.js';

const packr = new Packr({ useRecords: false });

const blockShape = z.strictObject({
  block_id: z.string(),
  device_id: z.string(),
  app_id: z.string().nullable(),
  scope: z.enum(BLOCK_SCOPES),
  tower_id: z.string().describe("the tower of a tower-scope block; '' for a wider one"),
  towers: z.array(z.string()).describe('the towers the block was carried out at'),
  carrier: z.string(),
  created_by: z.string(),
  created_at: z.string(),
  expires_at: z.string().nullable(),
  hits: z.number(),
  first_alert_id: z.string(),
  last_alert_id: z.string(),
  last_hit_at: z.string(),
  rule_id: z.string().nullable(),
  status: z.enum(['active', 'ineffective']),
  events_since: z.number().int().describe("the blocked traffic stored since the block's grace period ended; more than 0: ineffective"),
  last_seen_at: z.string().nullable(),
  ineffective_since: z.string().nullable(),
});

function blockView(b: Block): z.infer<typeof blockShape> {
  return {
    block_id: b.block_id,
    device_id: b.device_id,
    app_id: b.app_id,
    scope: b.scope,
    tower_id: b.tower_id,
    towers: blockTowers(b),
    carrier: b.carrier,
    created_by: b.created_by,
    created_at: iso(b.created_at),
    expires_at: b.expires_at === null ? null : iso(b.expires_at),
    hits: b.hits,
    first_alert_id: b.first_alert_id,
    last_alert_id: b.last_alert_id,
    last_hit_at: iso(b.last_hit_at),
    rule_id: b.rule_id,
    status: blockStatus(b),
    events_since: b.events_since ?? 0,
    last_seen_at: b.last_seen_at == null ? null : iso(b.last_seen_at),
    ineffective_since: b.ineffective_since == null ? null : iso(b.ineffective_since),
  };
}

export function blockRoutes(ctx: ApiContext, options: { replicas: number }): ApiRoute[] {
  const opened = reopening(() => openKvBucket(ctx.nc, BLOCKS_BUCKET, { history: 1, replicas: options.replicas, timeoutMs: 2_000, retryForMs: 0 }));
  /** Opened on first use; a failure is a 503 and the next request tries again. */
  const bucket = async (): Promise<KV> => {
    try {
      return await opened();
    } catch (err) {
      throw new ApiError(503, 'blocks_unavailable', `the blocks cannot be read now: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
  const mustGet = async (enterprise: string, blockId: string): Promise<Block> => {
    const key = blockKeyOfId(enterprise, blockId);
    const entry = key === null ? null : await (await bucket()).get(key);
    if (entry?.operation !== 'PUT') throw new ApiError(404, 'not_found', `no active block '${blockId}' in this enterprise`, { block_id: blockId });
    const block = decodeStoredBlock(entry.value);
    if (block === null) {
      ctx.log(`api: blocks entry ${entry.key} does not read as a block`, 'warn');
      throw new ApiError(500, 'block_unreadable', `block '${blockId}' is stored in a form this server cannot read`, { block_id: blockId });
    }
    return block;
  };
  return [
    route({
      method: 'get',
      path: '/blocks',
      tag: 'remediation',
      summary: "The enterprise's active blocks (device, or device and app, per tower), the most recently hit first",
      access: 'read',
      query: z.strictObject({
        ...enterpriseQuery,
        ...pageQuery,
        device_id: z.string().min(1).max(128).optional(),
        tower_id: z.string().min(1).max(128).optional(),
        status: z.enum(['active', 'ineffective']).optional(),
      }),
      response: z.strictObject({ blocks: z.array(blockShape), ...pageInfo }),
      handler: async ({ query, principal }) => {
        const enterprise = scopeOf(ctx.view, principal, query.enterprise_id);
        // Entries that do not read as blocks are left out (GET of one names it).
        const stored = await kvValues(await bucket(), `${enterprise}.>`, (e) => decodeStoredBlock(e.value));
        const blocks = stored.filter(
          (b): b is Block =>
            b !== null &&
            (query.device_id === undefined || b.device_id === query.device_id) &&
            (query.tower_id === undefined || blockTowers(b).includes(query.tower_id)) &&
            (query.status === undefined || blockStatus(b) === query.status),
        );
        blocks.sort((a, b) => b.last_hit_at - a.last_hit_at || (a.block_id < b.block_id ? -1 : 1));
        const { items, info } = paginate(blocks, query.page, query.limit);
        return { body: { blocks: items.map(blockView), ...info } };
      },
    }),
    route({
      method: 'get',
      path: '/blocks/{block_id}',
      tag: 'remediation',
      summary: 'One active block',
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery }),
      response: blockShape,
      handler: async ({ query, principal, params }) => ({
        body: blockView(await mustGet(scopeOf(ctx.view, principal, query.enterprise_id), params['block_id'] ?? '')),
      }),
    }),
    route({
      method: 'post',
      path: '/blocks',
      tag: 'remediation',
      summary:
        'Block a device (or one app on it) at a tower by hand, without an alert: a block request for the remediation worker (202; the block appears at GET /blocks/{block_id} once the tower acked)',
      access: 'write',
      successStatus: 202,
      body: z.strictObject({
        ...enterpriseQuery,
        device_id: z.string().min(1).max(128),
        scope: z
          .enum(BLOCK_SCOPES)
          .default('tower')
          .describe("tower: at tower_id; carrier: at every tower of carrier_id; enterprise: at every tower of the enterprise's carriers"),
        tower_id: z.string().min(1).max(128).optional(),
        carrier_id: z.string().min(1).max(128).optional(),
        app_id: z.string().min(1).max(128).optional(),
      }),
      response: z.strictObject({ block_id: z.string(), status: z.enum(['queued']), action_id: z.string() }),
      handler: async ({ body, principal }) => {
        const enterprise = scopeOf(ctx.view, principal, body.enterprise_id);
        const device = ctx.view.device(body.device_id);
        if (device?.enterprise_id !== enterprise)
          throw new ApiError(404, 'not_found', `no device '${body.device_id}' in this enterprise`, { device_id: body.device_id });
        const carriers = ctx.view.enterprise(enterprise)?.carrier_ids ?? [];
        const need = (field: 'tower_id' | 'carrier_id', ok: boolean): void => {
          if (!ok)
            throw new ApiError(400, 'validation_failed', `scope ${body.scope} needs ${field}`, [
              { path: `body.${field}`, message: `required with scope ${body.scope}`, code: 'custom' },
            ]);
        };
        let towerId = '';
        let carrier = '';
        if (body.scope === 'tower') {
          need('tower_id', body.tower_id !== undefined);
          const tower = ctx.view.tower(body.tower_id ?? '');
          if (tower === undefined) throw new ApiError(400, 'unknown_reference', `no tower '${body.tower_id ?? ''}'`, { field: 'tower_id', id: body.tower_id });
          towerId = tower.id;
          carrier = tower.carrier_ids[0] ?? '';
        } else if (body.scope === 'carrier') {
          need('carrier_id', body.carrier_id !== undefined);
          if (!carriers.includes(body.carrier_id ?? ''))
            throw new ApiError(
              400,
              'unknown_reference',
              `carrier '${body.carrier_id ?? ''}' is not one of this enterprise's carriers (${carriers.join(', ') || 'none'})`,
              {
                field: 'carrier_id',
                id: body.carrier_id,
              },
            );
          carrier = body.carrier_id ?? '';
        } else if (carriers.length === 0) {
          throw new ApiError(400, 'validation_failed', 'this enterprise has no carriers: nothing for an enterprise-wide block to reach', [
            { path: 'body.scope', message: 'no carriers', code: 'custom' },
          ]);
        }
        if (body.app_id !== undefined && ctx.view.app(body.app_id) === undefined)
          throw new ApiError(400, 'unknown_reference', `no app '${body.app_id}'`, { field: 'app_id', id: body.app_id });
        const action = body.app_id === undefined ? ('block_device' as const) : ('block_app' as const);
        const alertId = `manual:${randomUUID()}`;
        const request: RemediationRequest = {
          type: 'remediation',
          trigger: 'manual',
          alert_id: alertId,
          enterprise_id: enterprise,
          device_id: body.device_id,
          tower_id: towerId,
          carrier,
          app_id: body.app_id ?? '',
          action,
          rule_id: null,
          requested_at: ctx.now(),
          requested_by: principal.account.username,
          ...(body.scope === 'tower' ? {} : { scope: body.scope }),
        };
        await publishWithRetry(
          ctx.js,
          remediationSubject(enterprise, towerId === '' ? WIDE_SCOPE_SUBJECT : towerId),
          packr.pack(request),
          { msgID: remediationMsgId(alertId, action) },
          { budgetMs: 5_000 },
        );
        const blockId = blockIdOf({
          enterprise_id: enterprise,
          device_id: body.device_id,
          app_id: body.app_id ?? null,
          scope: body.scope,
          tower_id: towerId,
          carrier,
        });
        return { status: 202, body: { block_id: blockId, status: 'queued' as const, action_id: remedialActionId(alertId, action) } };
      },
    }),
    route({
      method: 'del',
      path: '/blocks/{block_id}',
      tag: 'remediation',
      summary: 'Lift a block: an unblock at its tower, by the remediation worker (202; GET /remedial-actions/{action_id} for the outcome)',
      access: 'write',
      query: z.strictObject({ ...enterpriseQuery }),
      successStatus: 202,
      response: z.strictObject({ block_id: z.string(), status: z.enum(['unblocking']), action_id: z.string() }),
      handler: async ({ query, principal, params }) => {
        const enterprise = scopeOf(ctx.view, principal, query.enterprise_id);
        const block = await mustGet(enterprise, params['block_id'] ?? '');
        const { request, msgId, actionId } = unblockRequestOf(block, { now: ctx.now(), requestedBy: principal.account.username });
        await publishWithRetry(
          ctx.js,
          remediationSubject(enterprise, block.tower_id || WIDE_SCOPE_SUBJECT),
          packr.pack(request),
          { msgID: msgId },
          { budgetMs: 5_000 },
        );
        return { status: 202, body: { block_id: block.block_id, status: 'unblocking' as const, action_id: actionId } };
      },
    }),
  ];
}

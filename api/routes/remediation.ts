/**
 * `POST /remedial-actions`: an admin asks for an action on one of the enterprise's alerts. The
 * request goes on the REMEDIATION work queue in the pipeline's format (trigger "manual"), with
 * the same `Nats-Msg-Id` as an automatic one (`<alert_id>:<action>`), so an alert is not acted
 * on twice; the remediation worker executes it and records the outcome.
 */
import { Packr } from 'msgpackr';
import { z } from 'zod';
import {
  ACTION_NAMES,
  REMEDIAL_ACTIONS,
  REMEDIATION_STATUSES,
  remedialActionId,
  remediationMsgId,
  type RemedialAction,
  type RemediationRequest,
} from '../../core/remediation.js';
import { publishWithRetry, remediationSubject } from '../../core/nats/index.js';
import { route, type ApiContext, type ApiRoute } from '../context.js';
import { ApiError } from '../errors.js';
import { findAlert, remedialActions } from '../history.js';
import { enterpriseQuery, iso, pageInfo, pageOf, pageQuery, resolveRange, timeRangeQuery } from '../schemas.js';
import { scopeOf } from '../tenancy.js';

const packr = new Packr({ useRecords: false });

export function remediationRoutes(ctx: ApiContext): ApiRoute[] {
  return [
    route({
      method: 'get',
      path: '/remedial-actions',
      tag: 'remediation',
      summary: 'Remedial actions taken, automatically or by hand, with their outcome; newest first (default: the last 7 days)',
      access: 'read',
      query: z.strictObject({
        ...enterpriseQuery,
        ...timeRangeQuery,
        ...pageQuery,
        status: z.enum(REMEDIATION_STATUSES).optional(),
        device_id: z.string().min(1).max(128).optional(),
      }),
      response: z.strictObject({
        remedial_actions: z.array(
          z.strictObject({
            action_id: z.string(),
            alert_id: z.string(),
            action_name: z.string(),
            status: z.string(),
            trigger: z.string(),
            device_id: z.string(),
            tower_id: z.string(),
            app_id: z.string(),
            attempts: z.number(),
            reason: z.string().nullable(),
            requested_by: z.string().nullable(),
            executed_at: z.string(),
          }),
        ),
        ...pageInfo,
      }),
      handler: async ({ query, principal }) => {
        const enterprise = scopeOf(ctx.view, principal, query.enterprise_id);
        const { from, to } = resolveRange(query, ctx.now(), '7d');
        const { actions, total } = await remedialActions(ctx.clickhouse, {
          enterprise,
          from,
          to,
          status: query.status,
          device_id: query.device_id,
          limit: query.limit,
          offset: (query.page - 1) * query.limit,
        });
        return {
          body: {
            remedial_actions: actions.map((a) => ({
              action_id: a.action_id,
              alert_id: a.alert_id,
              action_name: ACTION_NAMES[a.action as RemedialAction] ?? a.action,
              status: a.status,
              trigger: a.trigger,
              device_id: a.device_id,
              tower_id: a.tower_id,
              app_id: a.app_id,
              attempts: a.attempts,
              reason: a.reason === '' ? null : a.reason,
              requested_by: a.requested_by === '' ? null : a.requested_by,
              executed_at: iso(a.executed_at),
            })),
            ...pageOf(query.page, query.limit, total),
          },
        };
      },
    }),
    route({
      method: 'post',
      path: '/remedial-actions',
      tag: 'remediation',
      summary: 'Ask for a remedial action on an alert (queued for the remediation worker; 202)',
      access: 'write',
      successStatus: 202,
      body: z.strictObject({ ...enterpriseQuery, alert_id: z.string().min(1).max(200), action: z.enum(REMEDIAL_ACTIONS) }),
      response: z.strictObject({
        action_id: z.string(),
        alert_id: z.string(),
        action_name: z.string(),
        status: z.enum(['queued', 'already_queued']),
        trigger: z.literal('manual'),
        device_id: z.string(),
        tower_id: z.string(),
        requested_at: z.string(),
        executed_at: z.null(),
      }),
      handler: async ({ body, principal }) => {
        const enterprise = scopeOf(ctx.view, principal, body.enterprise_id);
        const alert = await findAlert(ctx.clickhouse, enterprise, body.alert_id);
        if (alert === null) throw new ApiError(404, 'not_found', `no alert '${body.alert_id}' in this enterprise`, { alert_id: body.alert_id });
        const requestedAt = ctx.now();
        const request: RemediationRequest = {
          type: 'remediation',
          trigger: 'manual',
          alert_id: alert.alert_id,
          enterprise_id: enterprise,
          device_id: alert.device_id,
          tower_id: alert.tower_id,
          carrier: alert.carrier,
          app_id: alert.app_id,
          action: body.action,
          rule_id: alert.rule_id === '' ? null : alert.rule_id,
          requested_at: requestedAt,
          requested_by: principal.account.username,
        };
        // A short retry rides out a leader election's first seconds; longer, the caller gets 503.
        const ack = await publishWithRetry(
          ctx.js,
          remediationSubject(enterprise, alert.tower_id),
          packr.pack(request),
          { msgID: remediationMsgId(alert.alert_id, body.action) },
          { budgetMs: 5_000 },
        );
        return {
          status: 202,
          body: {
            action_id: remedialActionId(alert.alert_id, body.action),
            alert_id: alert.alert_id,
            action_name: ACTION_NAMES[body.action],
            status: ack.duplicate ? 'already_queued' : 'queued',
            trigger: 'manual',
            device_id: alert.device_id,
            tower_id: alert.tower_id,
            requested_at: iso(requestedAt),
            executed_at: null,
          },
        };
      },
    }),
  ];
}

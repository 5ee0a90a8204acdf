/**
 * `POST /remedial-actions`: an admin asks for an action on one of the enterprise's alerts. The
 * request goes on the REMEDIATION work queue in the pipeline's format (trigger "manual"), with
 * the same `Nats-Msg-Id` as an automatic one (`<alert_id>:<action>`), so an alert is not acted
 * on twice; the remediation worker executes it and records the outcome. With `?wait=S` the reply
 * is the outcome when the worker announces it within S seconds (the brief's `success` and
 * `executed_at`), else the 202. `GET /remedial-actions/{action_id}` reads one outcome.
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
import { enterpriseEventsSubject, type RemediationMessage } from '../../core/live.js';
import { route, type ApiContext, type ApiRoute } from '../context.js';
import { ApiError } from '../errors.js';
import { findAlert, findAlertRow, findRemedialAction, remedialActions, type RemedialActionRow } from '../history.js';
import { enterpriseQuery, iso, pageInfo, pageOf, pageQuery, resolveRange, timeRangeQuery } from '../schemas.js';
import { scopeOf } from '../tenancy.js';

const packr = new Packr({ useRecords: false });

const actionShape = z.strictObject({
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
});

function actionView(a: RemedialActionRow): z.infer<typeof actionShape> {
  return {
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
  };
}

/** Longest `?wait=` on POST /remedial-actions. */
export const MAX_REMEDIATION_WAIT_S = 30;
const ACTION_ID = /^ra_[0-9a-f]{20}$/;

/**
 * The worker's announcement of `actionId` on `events.<enterprise>`, or null after `ms`. Subscribed
 * at once, so an outcome published after this call returns is not missed; `cancel` stops it.
 */
function outcomeOf(ctx: ApiContext, enterprise: string, actionId: string, ms: number): { outcome: Promise<RemediationMessage | null>; cancel: () => void } {
  let done: (m: RemediationMessage | null) => void = () => undefined;
  const outcome = new Promise<RemediationMessage | null>((resolve) => (done = resolve));
  const timer = setTimeout(() => done(null), ms);
  const sub = ctx.nc.subscribe(enterpriseEventsSubject(enterprise), {
    callback: (err, msg) => {
      if (err !== null) return done(null);
      try {
        const m = JSON.parse(msg.string()) as Partial<RemediationMessage>;
        if (m.type === 'remediation' && m.action_id === actionId) done(m as RemediationMessage);
      } catch {
        // not JSON: not the announcement waited for
      }
    },
  });
  const cancel = (): void => {
    clearTimeout(timer);
    sub.unsubscribe();
    done(null);
  };
  void outcome.then(cancel);
  return { outcome, cancel };
}

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
        remedial_actions: z.array(actionShape),
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
            remedial_actions: actions.map(actionView),
            ...pageOf(query.page, query.limit, total),
          },
        };
      },
    }),
    route({
      method: 'get',
      path: '/remedial-actions/{action_id}',
      tag: 'remediation',
      summary: 'One remedial action with its outcome (404 until the remediation worker has run it)',
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery }),
      response: actionShape,
      handler: async ({ query, principal, params }) => {
        const enterprise = scopeOf(ctx.view, principal, query.enterprise_id);
        const actionId = params['action_id'] ?? '';
        const found = ACTION_ID.test(actionId) ? await findRemedialAction(ctx.clickhouse, enterprise, actionId) : null;
        if (found === null) {
          throw new ApiError(
            404,
            'not_found',
            `no outcome of remedial action '${actionId}' in this enterprise (a queued action has one once the worker ran it)`,
            {
              action_id: actionId,
            },
          );
        }
        return { body: actionView(found) };
      },
    }),
    route({
      method: 'post',
      path: '/remedial-actions',
      tag: 'remediation',
      summary:
        'Ask for a remedial action on an alert (queued for the remediation worker; 202). With ?wait=S (at most 30): 200 with the outcome (status and executed_at) when it comes within S seconds, or was recorded before',
      access: 'write',
      successStatus: 202,
      // The wait, the publish's retries through a broker blip, and the lookups around them.
      timeoutMs: (MAX_REMEDIATION_WAIT_S + 30) * 1000,
      query: z.strictObject({ wait: z.coerce.number().min(0).max(MAX_REMEDIATION_WAIT_S).default(0).describe('seconds to wait for the outcome') }),
      body: z.strictObject({ ...enterpriseQuery, alert_id: z.string().min(1).max(200), action: z.enum(REMEDIAL_ACTIONS) }),
      response: z.strictObject({
        action_id: z.string(),
        alert_id: z.string(),
        action_name: z.string(),
        status: z.enum(['queued', 'already_queued', ...REMEDIATION_STATUSES]),
        trigger: z.enum(['manual', 'auto']),
        device_id: z.string(),
        tower_id: z.string(),
        requested_at: z.string(),
        executed_at: z.string().nullable(),
        reason: z.string().nullable().optional(),
      }),
      handler: async ({ query, body, principal }) => {
        const enterprise = scopeOf(ctx.view, principal, body.enterprise_id);
        const alert = await findAlertRow(ctx.recentAlerts, enterprise, body.alert_id, () => findAlert(ctx.clickhouse, enterprise, body.alert_id));
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
        const actionId = remedialActionId(alert.alert_id, body.action);
        const waiting = query.wait > 0 ? outcomeOf(ctx, enterprise, actionId, query.wait * 1000) : null;
        try {
          // A short retry rides out a leader election's first seconds; longer, the caller gets 503.
          const ack = await publishWithRetry(
            ctx.js,
            remediationSubject(enterprise, alert.tower_id),
            packr.pack(request),
            { msgID: remediationMsgId(alert.alert_id, body.action) },
            { budgetMs: 5_000 },
          );
          const queued = {
            action_id: actionId,
            alert_id: alert.alert_id,
            action_name: ACTION_NAMES[body.action],
            trigger: 'manual' as const,
            device_id: alert.device_id,
            tower_id: alert.tower_id,
            requested_at: iso(requestedAt),
          };
          if (waiting !== null) {
            // A duplicate may have run already (the same alert and action, automatic or by hand).
            const before = ack.duplicate ? await findRemedialAction(ctx.clickhouse, enterprise, actionId) : null;
            const outcome = before !== null ? actionView(before) : await waiting.outcome;
            if (outcome !== null) {
              return {
                status: 200,
                body: {
                  ...queued,
                  status: outcome.status as (typeof REMEDIATION_STATUSES)[number],
                  trigger: outcome.trigger === 'auto' ? ('auto' as const) : ('manual' as const),
                  executed_at: outcome.executed_at,
                  reason: outcome.reason,
                },
              };
            }
          }
          return { status: 202, body: { ...queued, status: ack.duplicate ? ('already_queued' as const) : ('queued' as const), executed_at: null } };
        } finally {
          waiting?.cancel();
        }
      },
    }),
  ];
}

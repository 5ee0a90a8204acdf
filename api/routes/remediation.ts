/**
 * `POST /remedial-actions`: an admin asks for an action on one of the enterprise's alerts. The
 * request goes on the REMEDIATION work queue in the pipeline's format (trigger "manual"), with
 * the same `Nats-Msg-Id` as an automatic one (`<alert_id>:<action>`), so an alert is not acted
 * on twice; the remediation worker executes it and records the outcome.
 */
import { createHash } from 'node:crypto';
import { Packr } from 'msgpackr';
import { z } from 'zod';
import { remediationSubject } from '../../core/streams.js';
import type { ApiContext, ApiRoute } from '../context.js';
import { ApiError } from '../errors.js';
import { findAlert } from '../history.js';
import { enterpriseQuery, iso } from '../schemas.js';
import { scopeOf } from '../tenancy.js';

export const REMEDIAL_ACTIONS = ['block_device', 'block_app', 'unblock_device', 'unblock_app'] as const;
const ACTION_NAMES: Readonly<Record<(typeof REMEDIAL_ACTIONS)[number], string>> = {
  block_device: 'Block Device',
  block_app: 'Block App',
  unblock_device: 'Unblock Device',
  unblock_app: 'Unblock App',
};

const packr = new Packr({ useRecords: false });

/** Stable per alert and action, so a repeated request names the same action. */
export function remedialActionId(alertId: string, action: string): string {
  return `ra_${createHash('sha256').update(`${alertId}:${action}`).digest('hex').slice(0, 20)}`;
}

export function remediationRoutes(ctx: ApiContext): ApiRoute[] {
  return [
    {
      method: 'post',
      path: '/remedial-actions',
      tag: 'remediation',
      summary: "Ask for a remedial action on an alert (queued for the remediation worker; 202)",
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
        const request = {
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
        const ack = await ctx.js.publish(remediationSubject(enterprise, alert.tower_id), packr.pack(request), { msgID: `${alert.alert_id}:${body.action}` });
        return {
          status: 202,
          body: {
            action_id: remedialActionId(alert.alert_id, body.action),
            alert_id: alert.alert_id,
            action_name: ACTION_NAMES[body.action as (typeof REMEDIAL_ACTIONS)[number]],
            status: ack.duplicate ? 'already_queued' : 'queued',
            trigger: 'manual',
            device_id: alert.device_id,
            tower_id: alert.tower_id,
            requested_at: iso(requestedAt),
            executed_at: null,
          },
        };
      },
    },
  ];
}

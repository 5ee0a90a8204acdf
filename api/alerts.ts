/** The one alert shape of `/dashboard/alerts` and `/ws/alerts`: the brief's fields plus where and which rule. */
import { z } from 'zod';
import type { Alert, LiveAlert } from '../core/live.js';
import type { AlertRow } from './history.js';

export const alertShape = z.strictObject({
  alert_id: z.string(),
  user_id: z.string(),
  user_name: z.string(),
  device_id: z.string(),
  app_id: z.string(),
  app_name: z.string(),
  action: z.string(),
  policy_id: z.string(),
  policy_name: z.string(),
  rule_id: z.string().nullable(),
  severity: z.string(),
  remediation: z.string().nullable(),
  tower_id: z.string(),
  tower_location: z.string(),
  region: z.string(),
  carrier: z.string(),
  timestamp: z.string(),
});
/** What pages read (core/liveMessages.ts); the build fails if the schema and it drift apart. */
export type AlertView = LiveAlert;
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const schemaIsLiveAlert: Same<z.infer<typeof alertShape>, LiveAlert> = true;
void schemaIsLiveAlert;

/** From a violations row or a pipeline alert (the row says `action_name` where the alert says `action`). */
export function alertView(a: AlertRow | Alert): AlertView {
  return {
    alert_id: a.alert_id,
    user_id: a.user_id,
    user_name: a.user_name,
    device_id: a.device_id,
    app_id: a.app_id,
    app_name: a.app_name,
    action: 'action' in a ? a.action : a.action_name,
    policy_id: a.policy_id,
    policy_name: a.policy_name,
    rule_id: a.rule_id === '' ? null : a.rule_id,
    severity: a.severity,
    remediation: a.remediation === '' ? null : a.remediation,
    tower_id: a.tower_id,
    tower_location: a.tower_location,
    region: a.region,
    carrier: a.carrier,
    timestamp: new Date(a.ts).toISOString(),
  };
}

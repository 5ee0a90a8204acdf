/**
 * What the pipeline, the api and the remediation worker share about remedial actions: the
 * request on the REMEDIATION work queue, the action names, and the stable action id.
 */
import { createHash } from 'node:crypto';

export const REMEDIAL_ACTIONS = ['block_device', 'block_app', 'unblock_device', 'unblock_app'] as const;
export type RemedialAction = (typeof REMEDIAL_ACTIONS)[number];

export const ACTION_NAMES: Readonly<Record<RemedialAction, string>> = {
  block_device: 'Block Device',
  block_app: 'Block App',
  unblock_device: 'Unblock Device',
  unblock_app: 'Unblock App',
};

/** `merged`: an automatic block request that an active block already covered (core/blocks.ts); no command sent. */
export const REMEDIATION_STATUSES = ['success', 'failed', 'timeout', 'skipped_by_plan', 'merged'] as const;
export type RemediationStatus = (typeof REMEDIATION_STATUSES)[number];

/** A request on `remediation.<enterprise>.<tower>` (msgpack), automatic or manual. */
export interface RemediationRequest {
  type: 'remediation';
  trigger: 'auto' | 'manual';
  alert_id: string;
  enterprise_id: string;
  device_id: string;
  tower_id: string;
  carrier: string;
  app_id: string;
  action: RemedialAction;
  rule_id: string | null;
  requested_at: number;
  requested_by?: string;
  /** Where a block holds (core/blocks.ts): absent, the tower; `carrier`: every tower of `carrier`; `enterprise`: every tower of the enterprise's carriers. */
  scope?: 'tower' | 'carrier' | 'enterprise';
  /** For a wider scope: the towers to command (an unblock names those its block reached); absent, the remediator finds them. */
  towers?: string[];
}

/** Stable per alert and action: a repeated request names the same action, and runs once. */
export function remedialActionId(alertId: string, action: string): string {
  return `ra_${createHash('sha256').update(`${alertId}:${action}`).digest('hex').slice(0, 20)}`;
}

/**
 * `Nats-Msg-Id` of a request on REMEDIATION: the same for an automatic and a manual request on
 * one alert and action, so the stream's duplicate window drops the second.
 */
export function remediationMsgId(alertId: string, action: string): string {
  return `${alertId}:${action}`;
}

/** A tower's answer on `tower.<tower>.commands` (docs/wire-format.md). */
export interface TowerAck {
  command_id: string;
  tower_id: string;
  /** ok: applied; failed: not now, retry; rejected: malformed, never. */
  status: 'ok' | 'failed' | 'rejected';
  reason?: string;
  at: number;
}

/**
 * Blocks as state: what the towers have been told to stop carrying, one entry per (enterprise,
 * device, app or the whole device, tower) in the KV bucket `towerwatch-blocks`. The remediation
 * worker writes them (a block command that succeeded makes or extends one; an unblock removes
 * it) and merges automatic requests that an active block already covers into it, so a device
 * that keeps violating at a tower gets one tower command, not one per alert. The api reads them
 * (`/blocks`).
 *
 * Key: `<enterprise>.<hash>`, so an enterprise lists its own with `<enterprise>.>` and a block id
 * (`bk_<hash>`) names an entry only within the enterprise that asks.
 */
import { createHash } from 'node:crypto';
import { remedialActionId, remediationMsgId, type RemediationRequest } from './remediation.js';

export const BLOCKS_BUCKET = 'towerwatch-blocks';

export interface Block {
  block_id: string;
  enterprise_id: string;
  device_id: string;
  /** The app blocked for the device, or null: the whole device. */
  app_id: string | null;
  /** Where it holds: one tower (the only scope so far). */
  scope: 'tower';
  tower_id: string;
  carrier: string;
  /** `auto` (the pipeline's remediation) or the account that asked. */
  created_by: string;
  created_at: number;
  /** When the worker lifts it by itself (the plan's `block_ttl_seconds`), or null: until lifted. */
  expires_at: number | null;
  /** Requests (alerts) it answered: the one that made it and those merged into it. */
  hits: number;
  first_alert_id: string;
  last_alert_id: string;
  last_hit_at: number;
  /** The rule of the first alert, when a rule decided it. */
  rule_id: string | null;
  /**
   * Proof (pipeline/blockProof.ts): events of the blocked traffic stored after the grace period
   * that followed the block. More than none: the tower is not honouring it (`ineffective`).
   */
  events_since?: number;
  last_seen_at?: number | null;
  ineffective_since?: number | null;
}

/** How long after a block its traffic may still arrive (in flight, a tower's reporting delay) before it counts against the block. */
export const PROOF_GRACE_MS = 60_000;

/** `ineffective` once traffic the block should stop was seen after its grace period. */
export function blockStatus(b: Block): 'active' | 'ineffective' {
  return (b.events_since ?? 0) > 0 ? 'ineffective' : 'active';
}

/** What a block is about. */
export interface BlockTarget {
  enterprise_id: string;
  device_id: string;
  app_id: string | null;
  tower_id: string;
}

/** The KV key of the block on `t`. */
export function blockKey(t: BlockTarget): string {
  return `${t.enterprise_id}.${blockHash(t)}`;
}

export function blockIdOf(t: BlockTarget): string {
  return `bk_${blockHash(t)}`;
}

/** The KV key of `blockId` within `enterprise`, or null when it is not a block id. */
export function blockKeyOfId(enterprise: string, blockId: string): string | null {
  return /^bk_[0-9a-f]{32}$/.test(blockId) ? `${enterprise}.${blockId.slice(3)}` : null;
}

/** The blocks that cover a block of `t`, narrowest last: the whole device, then (for an app) the app. */
export function coveringTargets(t: BlockTarget): BlockTarget[] {
  return t.app_id === null ? [t] : [{ ...t, app_id: null }, t];
}

function blockHash(t: BlockTarget): string {
  return createHash('sha256')
    .update(JSON.stringify([t.device_id, t.app_id ?? '', 'tower', t.tower_id]))
    .digest('hex')
    .slice(0, 32);
}

/**
 * The request that lifts `b` at its tower: automatic when its time is up, else by `requestedBy`.
 * One per block as it is now (its message id): a block made again later is lifted by a new one.
 */
export function unblockRequestOf(
  b: Block,
  o: { now: number; requestedBy?: string | undefined },
): { request: RemediationRequest; msgId: string; actionId: string } {
  const action = b.app_id === null ? ('unblock_device' as const) : ('unblock_app' as const);
  const alertId = `${o.requestedBy === undefined ? 'expired' : 'unblock'}:${b.block_id}:${b.created_at}`;
  const request: RemediationRequest = {
    type: 'remediation',
    trigger: o.requestedBy === undefined ? 'auto' : 'manual',
    alert_id: alertId,
    enterprise_id: b.enterprise_id,
    device_id: b.device_id,
    tower_id: b.tower_id,
    carrier: b.carrier,
    app_id: b.app_id ?? '',
    action,
    rule_id: b.rule_id,
    requested_at: o.now,
    ...(o.requestedBy === undefined ? {} : { requested_by: o.requestedBy }),
  };
  return { request, msgId: remediationMsgId(alertId, action), actionId: remedialActionId(alertId, action) };
}

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
import { z } from 'zod';
import { decodeStoredJson } from './storedJson.js';
import { remedialActionId, remediationMsgId, type RemediationRequest } from './remediation.js';

export const BLOCKS_BUCKET = 'towerwatch-blocks';

export interface Block {
  block_id: string;
  enterprise_id: string;
  device_id: string;
  /** The app blocked for the device, or null: the whole device. */
  app_id: string | null;
  /** Where it holds: one tower, every tower of one carrier, or every tower of the enterprise's carriers. */
  scope: BlockScope;
  /** The tower of a tower-scope block; for a wider one, '' (its towers are in `towers`). */
  tower_id: string;
  /** The carrier of a carrier-scope block; for a tower-scope one, the request's. */
  carrier: string;
  /** The towers that acked the block (a wider scope); absent on a tower-scope block: [tower_id]. */
  towers?: string[];
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

export const BLOCK_SCOPES = ['tower', 'carrier', 'enterprise'] as const;
/** The tower token of a wider block's requests on REMEDIATION (`remediation.<enterprise>.<tower>`). */
export const WIDE_SCOPE_SUBJECT = '_wide';
export type BlockScope = (typeof BLOCK_SCOPES)[number];

/** A block as stored: what the remediation worker writes, checked again by whoever reads it back. */
const storedBlock = z.looseObject({
  block_id: z.string().min(1),
  enterprise_id: z.string().min(1),
  device_id: z.string().min(1),
  app_id: z.string().nullable(),
  scope: z.enum(BLOCK_SCOPES),
  tower_id: z.string(),
  carrier: z.string(),
  towers: z.array(z.string()).optional(),
  created_by: z.string(),
  created_at: z.number(),
  expires_at: z.number().nullable(),
  hits: z.number(),
  first_alert_id: z.string(),
  last_alert_id: z.string(),
  last_hit_at: z.number(),
  rule_id: z.string().nullable(),
  events_since: z.number().optional(),
  last_seen_at: z.number().nullable().optional(),
  ineffective_since: z.number().nullable().optional(),
}) satisfies z.ZodType<Block>;

/** A bucket entry's value as a {@link Block}, or null when it is not one (not JSON, or not that shape). */
export function decodeStoredBlock(data: Uint8Array): Block | null {
  return decodeStoredJson(storedBlock, data);
}

/** What a block is about: a device (or an app on it) at a tower, at every tower of a carrier, or at all of the enterprise's. */
export interface BlockTarget {
  enterprise_id: string;
  device_id: string;
  app_id: string | null;
  /** @default 'tower' */
  scope?: BlockScope;
  /** For the tower scope. */
  tower_id: string;
  /** For the carrier scope. */
  carrier?: string;
}

/** The towers a block was carried out at. */
export function blockTowers(b: Pick<Block, 'tower_id' | 'towers'>): string[] {
  return b.towers ?? [b.tower_id];
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

/**
 * The blocks that would cover a block of `t`, widest first: the same or a wider scope (a tower's
 * carriers are `towerCarriers`), each for the whole device and, for an app, for the app.
 */
export function coveringTargets(t: BlockTarget, towerCarriers: readonly string[] = []): BlockTarget[] {
  const scope = t.scope ?? 'tower';
  const base = { enterprise_id: t.enterprise_id, device_id: t.device_id, tower_id: '' };
  const wider: BlockTarget[] = [{ ...base, app_id: null, scope: 'enterprise' }];
  const carriers = scope === 'carrier' ? [t.carrier ?? ''] : scope === 'tower' ? towerCarriers : [];
  for (const carrier of carriers) wider.push({ ...base, app_id: null, scope: 'carrier', carrier });
  if (scope === 'tower') wider.push({ ...base, app_id: null, scope: 'tower', tower_id: t.tower_id });
  if (t.app_id === null) return wider;
  return [...wider, ...wider.map((w) => ({ ...w, app_id: t.app_id }))];
}

function blockHash(t: BlockTarget): string {
  const scope = t.scope ?? 'tower';
  // The tower scope hashes as it did before there were others: its block ids stay the same.
  const where = scope === 'tower' ? t.tower_id : scope === 'carrier' ? (t.carrier ?? '') : '';
  return createHash('sha256')
    .update(JSON.stringify([t.device_id, t.app_id ?? '', scope, where]))
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
    ...(b.scope === 'tower' ? {} : { scope: b.scope, towers: blockTowers(b) }),
    ...(o.requestedBy === undefined ? {} : { requested_by: o.requestedBy }),
  };
  return { request, msgId: remediationMsgId(alertId, action), actionId: remedialActionId(alertId, action) };
}

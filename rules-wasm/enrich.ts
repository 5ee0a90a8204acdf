/**
 * Enrichment: what a tower reports (device, app, action, tower) turned into what the policies
 * speak of (the owner's roles, the app's name and category, the tower's region, the device's
 * OS). The same function serves the pipeline (over the control-plane view) and the simulator
 * (over its world), so both agree on which events are violations.
 */
import type { Action, App, Device, Tower, UsageEvent } from '../core/domain.js';
import type { EvalEvent } from './event.js';

/** Lookups enrichment needs; the control-plane view and the simulator's world both provide them. */
export interface Directory {
  device(id: string): Device | undefined;
  roleIdsOfUser(userId: string, enterpriseId: string): readonly string[];
  app(id: string): App | undefined;
  action(id: string): Action | undefined;
  tower(id: string): Tower | undefined;
}

export const UNENFORCED_REASONS = {
  /** The control plane has never heard of the device. */
  unknownDevice: 'unknown_device',
  /** Known (discovered, rejected, retired) but not registered to a user. */
  notRegistered: 'not_registered',
} as const;
export type UnenforcedReason = (typeof UNENFORCED_REASONS)[keyof typeof UNENFORCED_REASONS];

export type Enrichment =
  | { enforced: true; enterpriseId: string; userId: string; device: Device; event: EvalEvent }
  | { enforced: false; reason: UnenforcedReason; device: Device | undefined };

const ENFORCED_STATUSES: ReadonlySet<Device['status']> = new Set(['registered', 'active', 'inactive']);

export function enrichEvent(dir: Directory, e: UsageEvent): Enrichment {
  const device = dir.device(e.device);
  if (!device) return { enforced: false, reason: UNENFORCED_REASONS.unknownDevice, device: undefined };
  if (device.user_id === null || !ENFORCED_STATUSES.has(device.status)) {
    return { enforced: false, reason: UNENFORCED_REASONS.notRegistered, device };
  }
  return {
    enforced: true,
    enterpriseId: device.enterprise_id,
    userId: device.user_id,
    device,
    event: evalEventOf(dir, dir.roleIdsOfUser(device.user_id, device.enterprise_id), e, device),
  };
}

/**
 * What the evaluator sees of a use by someone with `roleIds`: app and action by their catalog
 * names, the tower's region, the device's OS (none without a device: OS conditions do not hold).
 */
export function evalEventOf(
  dir: Directory,
  roleIds: readonly string[],
  e: Pick<UsageEvent, 'app' | 'action' | 'tower' | 'ts' | 'bytes_up' | 'bytes_down'>,
  device: Pick<Device, 'os' | 'os_version'> | undefined,
): EvalEvent {
  const app = dir.app(e.app);
  const action = dir.action(e.action);
  return {
    role_ids: roleIds,
    app: app?.name ?? e.app,
    app_category: app?.category,
    action: action?.name ?? e.action,
    tower_id: e.tower,
    region: dir.tower(e.tower)?.region,
    os: device?.os,
    os_version: device?.os_version,
    ts: e.ts,
    bytes_up: e.bytes_up,
    bytes_down: e.bytes_down,
  };
}

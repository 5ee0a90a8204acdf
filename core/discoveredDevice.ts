/**
 * A discovered device as dashboards see it, in `GET /devices/discovered` and in the discovery
 * worker's `device.discovered` message: the registry entry, with tower locations, and (when
 * known) the towers' latest sighting, which is newer than the registry's last write.
 */
import type { Device } from './domain.js';

export interface DiscoveredDeviceView {
  id: string;
  model: string;
  os: string;
  os_version: string;
  status: 'discovered';
  first_seen: string | null;
  last_seen: string | null;
  first_tower_id: string | null;
  first_tower_location: string | null;
  last_tower_id: string | null;
  last_tower_location: string | null;
  carrier_id: string | null;
}

export interface LatestSighting {
  last_seen_ms: number;
  last_tower_id: string;
  last_carrier: string;
}

export function discoveredDeviceView(d: Device, locationOf: (towerId: string) => string | undefined, latest?: LatestSighting): DiscoveredDeviceView {
  const registryLast = d.last_seen === undefined ? -1 : Date.parse(d.last_seen);
  const fromSighting = latest !== undefined && latest.last_seen_ms >= registryLast ? latest : undefined;
  const lastTower = fromSighting?.last_tower_id ?? d.last_tower_id ?? null;
  const location = (tower: string | null | undefined): string | null => (tower == null ? null : (locationOf(tower) ?? null));
  return {
    id: d.id,
    model: d.model,
    os: d.os,
    os_version: d.os_version,
    status: 'discovered',
    first_seen: d.first_seen ?? null,
    last_seen: fromSighting ? new Date(fromSighting.last_seen_ms).toISOString() : (d.last_seen ?? null),
    first_tower_id: d.first_tower_id ?? null,
    first_tower_location: location(d.first_tower_id),
    last_tower_id: lastTower,
    last_tower_location: location(lastTower),
    carrier_id: fromSighting?.last_carrier ?? d.carrier_id ?? null,
  };
}

/**
 * The queries the schema is for, outside the api's history (api/history.ts): devices' last
 * sightings (from app_usage's `device_days` projection, and from discovery_sightings), and which
 * JetStream sequences already have rows (a redelivery after a crash).
 */
import type { ClickHouseHandle } from './open.js';
import type { InsertTable } from './rows.js';
import { tableOf, type TableScope } from './tables.js';

/** A device's first and last sighting, and its last tower and carrier, over the rows grouped. */
const SIGHTING_AGGREGATES = `toUnixTimestamp64Milli(min(ts)) AS first_seen_ms,
          toUnixTimestamp64Milli(max(ts)) AS last_seen_ms,
          CAST(argMax(tower_id, ts) AS String) AS last_tower_id,
          CAST(argMax(carrier, ts) AS String) AS last_carrier`;

export interface DeviceLastSeen {
  enterprise_id: string;
  device_id: string;
  /** Epoch ms of the first sighting within the kept history (or since `sinceMs`). */
  first_seen_ms: number;
  last_seen_ms: number;
  last_tower_id: string;
  last_carrier: string;
  /** Events seen (within the same window as `first_seen_ms`). */
  events: number;
}

export interface DeviceLastSeenQuery {
  /** One enterprise ('' for unknown devices); absent: every enterprise (carrier operators). */
  enterpriseId?: string;
  /** Only these devices. */
  deviceIds?: readonly string[];
  /** Only sightings on or after this day (epoch ms; rounded down to the UTC day). */
  sinceMs?: number;
  /** Most recently seen first. @default 1000 */
  limit?: number;
}

/**
 * Each device's last sighting (tower, carrier, time) and first sighting, newest first, read from
 * app_usage's `device_days` projection (one row per device and day per part).
 */
export async function queryDeviceLastSeen(handle: ClickHouseHandle, q: DeviceLastSeenQuery = {}): Promise<DeviceLastSeen[]> {
  const where: string[] = [];
  const params: Record<string, unknown> = { limit: q.limit ?? 1000 };
  if (q.enterpriseId !== undefined) {
    where.push('enterprise_id = {enterprise:String}');
    params['enterprise'] = q.enterpriseId;
  }
  if (q.deviceIds !== undefined) {
    where.push('device_id IN {devices:Array(String)}');
    params['devices'] = [...q.deviceIds];
  }
  if (q.sinceMs !== undefined) {
    // On the projection's key (a day), not on ts, so that the projection answers it.
    where.push("toDate(ts) >= toDate(fromUnixTimestamp64Milli({since:Int64}, 'UTC'))");
    params['since'] = q.sinceMs;
  }
  const rows = await (
    await handle.client.query({
      query: `SELECT
          enterprise_id,
          device_id,
          ${SIGHTING_AGGREGATES},
          count() AS events
        FROM ${tableOf(handle, 'app_usage')}
        ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''}
        GROUP BY enterprise_id, device_id
        ORDER BY last_seen_ms DESC, device_id
        LIMIT {limit:UInt32}`,
      query_params: params,
      format: 'JSONEachRow',
    })
  ).json<Record<keyof DeviceLastSeen, string | number>>();
  return rows.map((r) => ({
    enterprise_id: String(r.enterprise_id),
    device_id: String(r.device_id),
    first_seen_ms: Number(r.first_seen_ms),
    last_seen_ms: Number(r.last_seen_ms),
    last_tower_id: String(r.last_tower_id),
    last_carrier: String(r.last_carrier),
    events: Number(r.events),
  }));
}

/**
 * SQL and parameters for "which of these stream sequences have rows in each of `tables`"
 * (redelivered messages), in one query: each row is a table's index in `tables` and a sequence.
 * The engine's fixed cost per query (planning over every part) is paid once, not per table; the
 * minmax index on stream_seq skips parts of other batches.
 */
export function storedSeqsQuery(scope: TableScope, tables: readonly InsertTable[], seqs: readonly number[], stream = 'USAGE') {
  const parts = tables.map((table, i) => {
    // dead_letters holds rows of several streams, whose sequences overlap.
    const ofStream = table === 'dead_letters' ? ' AND stream = {stream:String}' : '';
    return `SELECT DISTINCT ${i} AS t, stream_seq FROM ${tableOf(scope, table)} WHERE stream_seq IN {seqs:Array(UInt64)}${ofStream}`;
  });
  return { query: parts.join(' UNION ALL '), query_params: { seqs: [...seqs], stream } };
}

/** Which of `seqs` already have rows in each of `tables` (of `stream`, for dead_letters): {@link storedSeqsQuery} run. */
export async function queryStoredSeqsIn(
  handle: ClickHouseHandle,
  tables: readonly InsertTable[],
  seqs: readonly number[],
  stream = 'USAGE',
): Promise<Map<InsertTable, Set<number>>> {
  const found = new Map<InsertTable, Set<number>>(tables.map((t) => [t, new Set()]));
  if (seqs.length === 0 || tables.length === 0) return found;
  const { query, query_params } = storedSeqsQuery(handle, tables, seqs, stream);
  const rows = await (await handle.client.query({ query, query_params, format: 'JSONCompactEachRow' })).json<[number | string, string | number]>();
  for (const [t, seq] of rows) found.get(tables[Number(t)] as InsertTable)?.add(Number(seq));
  return found;
}

export interface DeviceSighting {
  device_id: string;
  first_seen_ms: number;
  last_seen_ms: number;
  last_tower_id: string;
  last_carrier: string;
  sightings: number;
}

/** Each of these devices' first and last sighting by the towers (discovery_sightings), within the kept history. */
export async function queryDeviceSightings(
  handle: ClickHouseHandle,
  q: { enterpriseId: string; deviceIds: readonly string[] },
): Promise<Map<string, DeviceSighting>> {
  if (q.deviceIds.length === 0) return new Map();
  const rows = await (
    await handle.client.query({
      query: `SELECT
          device_id,
          ${SIGHTING_AGGREGATES},
          count() AS sightings
        FROM ${tableOf(handle, 'discovery_sightings')}
        WHERE enterprise_id = {enterprise:String} AND device_id IN {devices:Array(String)}
        GROUP BY device_id`,
      query_params: { enterprise: q.enterpriseId, devices: [...q.deviceIds] },
      format: 'JSONEachRow',
    })
  ).json<Record<keyof DeviceSighting, string | number>>();
  return new Map(
    rows.map((r) => [
      String(r.device_id),
      {
        device_id: String(r.device_id),
        first_seen_ms: Number(r.first_seen_ms),
        last_seen_ms: Number(r.last_seen_ms),
        last_tower_id: String(r.last_tower_id),
        last_carrier: String(r.last_carrier),
        sightings: Number(r.sightings),
      },
    ]),
  );
}

/**
 * Proof that a block holds: the traffic a block should have stopped (its device, or its app on
 * the device, at any tower it reached), stored after the block's grace period. A tower that honours the
 * block carries none; any is the tower ignoring the command, and the remediator marks the block
 * `ineffective` and announces it. One query per sweep for every active block.
 */
import { type ClickHouseHandle, tableOf } from '../core/clickhouse/index.js';
import { type Block, blockTowers } from '../core/blocks.js';

/** Blocks checked per query (the query joins each stored event of their devices against them). */
const BLOCKS_PER_QUERY = 500;

export interface BlockTraffic {
  events: number;
  /** Milliseconds since the epoch. */
  last: number;
}

/** For each block with traffic since its grace period ended (`graceMs` after it was made): how much, and the last. */
export async function trafficSince(ch: ClickHouseHandle, blocks: readonly Block[], graceMs: number): Promise<Map<string, BlockTraffic>> {
  const out = new Map<string, BlockTraffic>();
  for (let i = 0; i < blocks.length; i += BLOCKS_PER_QUERY) {
    const chunk = blocks.slice(i, i + BLOCKS_PER_QUERY);
    const starts = chunk.map((b) => b.created_at + graceMs);
    // Parallel arrays, zipped by ARRAY JOIN: one row per (stored event, block) pair to test.
    const rs = await ch.client.query({
      query: `SELECT block_id, count() AS n, toUnixTimestamp64Milli(max(ts)) AS last
        FROM ${tableOf(ch, 'app_usage')}
        ARRAY JOIN {ids:Array(String)} AS block_id, {devices:Array(String)} AS block_device, {apps:Array(String)} AS block_app,
          {towers:Array(Array(String))} AS block_towers, {starts:Array(Int64)} AS block_start
        WHERE enterprise_id IN {enterprises:Array(String)} AND device_id IN {devices:Array(String)}
          AND ts >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
          AND device_id = block_device AND (block_app = '' OR app_id = block_app) AND has(block_towers, tower_id)
          AND ts >= fromUnixTimestamp64Milli(block_start, 'UTC')
        GROUP BY block_id`,
      query_params: {
        ids: chunk.map((b) => b.block_id),
        devices: chunk.map((b) => b.device_id),
        apps: chunk.map((b) => b.app_id ?? ''),
        towers: chunk.map((b) => blockTowers(b)),
        starts,
        enterprises: [...new Set(chunk.map((b) => b.enterprise_id))],
        since: Math.min(...starts),
      },
      format: 'JSONEachRow',
    });
    for (const r of await rs.json<{ block_id: string; n: string | number; last: string | number }>()) {
      out.set(r.block_id, { events: Number(r.n), last: Number(r.last) });
    }
  }
  return out;
}

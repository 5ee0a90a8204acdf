/**
 * Wire codec micro benchmarks: decoding is the pipeline's hottest path, so the headline figure
 * is events/s decoded from 1,000-event frames. Frames come from the traffic generator so that
 * strings repeat as they do in real traffic (which is what the string table exploits).
 */
import type { UsageEvent } from '../core/domain.js';
import { decodeDiscovery, decodeUsage, encodeDiscoveryFrame, encodeUsageEvent, encodeUsageFrame } from '../core/wire.js';
import { createTrafficGenerator, groupByTower } from '../fixtures/traffic.js';
import { generateWorld } from '../fixtures/world.js';
import { runCases, type BenchCase, type BenchRow } from './benchReport.js';

export interface WireBenchRow extends BenchRow {
  /** Events (or reports) per second: ops_per_s × events per operation. */
  events_per_s: number;
  /** Encoded size per event of the measured message. */
  bytes_per_event: number;
}

const CARRIER = 'att';
const TOWER = 'tower123';

/** @param timeMs measuring time per case (plus up to 500 ms warmup each) */
export async function benchWire(timeMs = Number(process.env['BENCH_TIME_MS'] ?? 1000)): Promise<WireBenchRow[]> {
  const world = generateWorld({ seed: 1 });
  const traffic = createTrafficGenerator(world, { seed: 1 });
  const frame1k = traffic.nextFrame(CARRIER, TOWER, 1000);
  const frame5k = traffic.nextFrame(CARRIER, TOWER, 5000);
  const single = traffic.nextFrame(CARRIER, TOWER, 1)[0] as UsageEvent;
  const reports = groupByTower(traffic.nextDiscoveryReports(2000)).sort((a, b) => b.items.length - a.items.length)[0];
  if (!reports) throw new Error('no discovery reports generated');

  const bytes1k = encodeUsageFrame(CARRIER, TOWER, frame1k);
  const bytes1kInline = encodeUsageFrame(CARRIER, TOWER, frame1k, { stringTable: false });
  const bytes5k = encodeUsageFrame(CARRIER, TOWER, frame5k);
  const bytesSingle = encodeUsageEvent(single);
  const bytesReports = encodeDiscoveryFrame(reports.carrier, reports.tower, reports.items);

  // A codec that silently drops events would look fast: check every input decodes whole first.
  for (const [bytes, n] of [
    [bytes1k, 1000],
    [bytes1kInline, 1000],
    [bytes5k, 5000],
    [bytesSingle, 1],
  ] as const) {
    const r = decodeUsage(bytes);
    if (!r.ok || r.events.length !== n) throw new Error(`benchmark input does not decode to ${n} events: ${JSON.stringify(r).slice(0, 200)}`);
  }
  const rd = decodeDiscovery(bytesReports);
  if (!rd.ok || rd.reports.length !== reports.items.length) throw new Error('discovery benchmark input does not decode');

  const cases: Array<BenchCase & { units: number; bytes: number }> = [
    { name: 'decode usage frame, 1,000 events (string table)', fn: () => decodeUsage(bytes1k), units: 1000, bytes: bytes1k.length },
    { name: 'decode usage frame, 1,000 events (inline strings)', fn: () => decodeUsage(bytes1kInline), units: 1000, bytes: bytes1kInline.length },
    { name: 'decode usage frame, 5,000 events', fn: () => decodeUsage(bytes5k), units: 5000, bytes: bytes5k.length },
    { name: 'decode single usage event', fn: () => decodeUsage(bytesSingle), units: 1, bytes: bytesSingle.length },
    { name: 'encode usage frame, 1,000 events (string table)', fn: () => encodeUsageFrame(CARRIER, TOWER, frame1k), units: 1000, bytes: bytes1k.length },
    {
      name: 'encode usage frame, 1,000 events (inline strings)',
      fn: () => encodeUsageFrame(CARRIER, TOWER, frame1k, { stringTable: false }),
      units: 1000,
      bytes: bytes1kInline.length,
    },
    { name: 'encode single usage event', fn: () => encodeUsageEvent(single), units: 1, bytes: bytesSingle.length },
    {
      name: `decode discovery frame, ${reports.items.length} reports`,
      fn: () => decodeDiscovery(bytesReports),
      units: reports.items.length,
      bytes: bytesReports.length,
    },
  ];
  const rows = await runCases(
    cases.map((c) => ({ ...c, unit: 'events' })),
    timeMs,
  );
  return rows.map((row, i) => {
    const c = cases[i] as (typeof cases)[number];
    return { ...row, events_per_s: Math.round(row.ops_per_s * c.units), bytes_per_event: Math.round((c.bytes / c.units) * 10) / 10 };
  });
}

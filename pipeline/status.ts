/**
 * The one-line status `towerwatch pipeline` prints every few seconds: rates since the last
 * line, totals, and how far behind the consumer is.
 */
import type { PipelineCounters } from './pipeline.js';

export function statusLine(now: PipelineCounters, before: PipelineCounters, seconds: number, lag: number | null): string {
  const rate = (a: number, b: number): string => Math.round((a - b) / seconds).toLocaleString('en-US');
  const n = (x: number): string => Math.round(x).toLocaleString('en-US');
  const batches = now.batches - before.batches;
  const insertMs = batches > 0 ? (now.insertMs - before.insertMs) / batches : 0;
  const eventsPerBatch = batches > 0 ? (now.events - before.events) / batches : 0;
  return [
    `${rate(now.events, before.events)} events/s`,
    `${rate(now.violations, before.violations)} violations/s`,
    `stored ${n(now.stored)}`,
    `dead letters ${n(now.deadLetters)}`,
    `batch ${n(eventsPerBatch)} events, insert ${insertMs.toFixed(0)} ms`,
    `lag ${lag === null ? '?' : n(lag)} msgs`,
    `policies ${Object.keys(now.policyVersions).length}`,
  ].join(' · ');
}

export function snapshotCounters(c: PipelineCounters): PipelineCounters {
  return { ...c, policyVersions: { ...c.policyVersions } };
}

/**
 * The fuzzers a chaos run aims at a live `up`: fuzzed usage frames (fixtures/frameFuzz.ts)
 * published beside the known set, and fuzzed requests at every api route (api/apiFuzz.ts).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstream } from '@nats-io/jetstream';
import fc from 'fast-check';
import { publishWithRetry } from '../core/natsRetry.js';
import { frameCases, type FrameCase } from '../fixtures/frameFuzz.js';
import type { ChaosFuzzer, FuzzReport } from './chaos.js';

/** Chunks of fuzzed frames, one chunk every `pauseMs`, until the run ends. */
export function frameFuzzer(chunk = 20, pauseMs = 500): ChaosFuzzer {
  return {
    name: 'frames',
    async run({ nc, seed, signal }): Promise<FuzzReport> {
      const js = jetstream(nc, { timeout: 2000 });
      const report: FuzzReport = { cases: 0, serverErrors: 0, expectedEvents: 0, expectedDeadLetterMessages: 0, failures: [] };
      for (let round = 0; !signal.aborted; round++) {
        const [cases] = fc.sample(frameCases(chunk), { seed: seed * 1000 + round, numRuns: 1 }) as [FrameCase[]];
        for (const c of cases) {
          // A msgID per case: a publish retried across a kill is stored once.
          await publishWithRetry(js, c.subject, c.bytes, { msgID: `fuzz:${c.tower}` }, { budgetMs: 120_000 });
          report.cases++;
          report.expectedEvents += c.stored;
          if (c.deadLetter) report.expectedDeadLetterMessages++;
        }
        await sleep(pauseMs, undefined, { signal }).catch(() => undefined);
      }
      return report;
    },
  };
}

export function chaosFuzzers(): ChaosFuzzer[] {
  return [frameFuzzer()];
}

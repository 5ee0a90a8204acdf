/**
 * The fuzzers a chaos run aims at a live `up`: fuzzed usage frames (fixtures/frameFuzz.ts)
 * published beside the known set, and fuzzed requests at every api route (api/apiFuzz.ts).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstream } from '@nats-io/jetstream';
import fc from 'fast-check';
import { fuzzApi } from '../api/apiFuzz.js';
import { DEFAULT_DEMO_PASSWORD } from '../core/config.js';
import { publishWithRetry } from '../core/nats/index.js';
import { DEMO_ACCOUNTS } from '../fixtures/accounts.js';
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

/** fetch's failure to connect at all (refused, reset), as opposed to a reply it did not like. */
function isConnectionFailure(err: unknown): boolean {
  const cause = (err as { cause?: { code?: unknown } } | null)?.cause;
  return (
    err instanceof TypeError &&
    /fetch failed|terminated/.test(err.message) &&
    (cause === undefined || /^(ECONNREFUSED|ECONNRESET|UND_ERR_SOCKET|EPIPE)$/.test(String(cause.code)))
  );
}

async function healthy(url: string): Promise<boolean> {
  try {
    return (await fetch(new URL('/healthz', url), { signal: AbortSignal.timeout(2000) })).status === 200;
  } catch {
    return false;
  }
}

/** Tokens of the demo accounts that sign in now (the fuzzer's own bad sign-ins may hold some back). */
async function signIn(url: string, tokens: Record<string, string>): Promise<void> {
  const password = process.env['TOWERWATCH_DEMO_PASSWORD'] || DEFAULT_DEMO_PASSWORD;
  // Read-only roles: the known set's verdicts are checked exactly, so the policies, devices and
  // roles they depend on must not change under it. Writes are fuzzed in api/apiFuzz.test.ts.
  for (const a of DEMO_ACCOUNTS.filter((x) => x.role === 'analyst' || x.role === 'viewer')) {
    try {
      const r = await fetch(new URL('/auth/login', url), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: a.username, password }),
        signal: AbortSignal.timeout(5000),
      });
      if (r.status === 200) tokens[a.username] = ((await r.json()) as { access_token: string }).access_token;
    } catch {
      // down for a moment: the previous token, if any, still serves
    }
  }
}

/**
 * Rounds of fuzzed requests at every route while `up` lives through its kills. A request cut
 * off by a kill has no answer and is not counted against the api; a 503 `unavailable` (the
 * broker away) is the documented answer and counted apart; any other 5xx is a failure.
 */
export function apiFuzzer(roundMs = 3000): ChaosFuzzer {
  return {
    name: 'api',
    async run({ apiUrl, seed, signal }): Promise<FuzzReport> {
      const report: FuzzReport = { cases: 0, serverErrors: 0, unavailable: 0, expectedEvents: 0, expectedDeadLetterMessages: 0, failures: [] };
      const tokens: Record<string, string> = {};
      for (let round = 0; !signal.aborted; round++) {
        const url = apiUrl();
        if (!(await healthy(url))) {
          await sleep(250, undefined, { signal }).catch(() => undefined);
          continue;
        }
        if (round % 20 === 0) await signIn(url, tokens);
        const r = await fuzzApi({ url, tokens, durationMs: roundMs, seed: seed * 1000 + round, timeoutMs: 10_000 }).catch((err: unknown) => {
          // No connection (killed between the health check and the round's first request): a
          // kill, which the run counts itself; an exit of up's own is caught as a crash.
          if (!isConnectionFailure(err)) report.failures.push(`api fuzz round ${round}: ${String(err)}`);
          return null;
        });
        if (r === null) continue;
        const unavailable = r.byStatus[503] ?? 0;
        report.cases += r.cases;
        report.unavailable = (report.unavailable ?? 0) + unavailable;
        report.serverErrors += r.fiveXX - unavailable;
        for (const f of r.failures) {
          if (f.status === 0 || f.status === 503) continue; // cut off by a kill, or the broker away
          report.failures.push(`${f.request.method} ${f.request.path} (${f.request.kind}) → ${f.status}: ${f.reason}`);
        }
      }
      return report;
    },
  };
}

export function chaosFuzzers(): ChaosFuzzer[] {
  return [frameFuzzer(), apiFuzzer()];
}

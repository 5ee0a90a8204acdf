/**
 * The fault-injection run: `towerwatch up` (embedded defaults) as a child process, fed a known
 * set of events while this process SIGKILLs its nats-server and `up` itself at random points,
 * publishes fuzzed frames, and fuzzes every api route. Afterwards it waits for the pipeline to
 * drain, stops `up`, opens its ClickHouse data and checks that what was published is stored
 * exactly once. `npm test` runs a short one (bin/chaos.test.ts); `towerwatch chaos` a longer one.
 *
 * With the embedded engine the pipeline lives in `up`'s process: killing `up` kills the
 * pipeline (and, through pdeathsig, the nats-server) mid-batch.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Command } from 'commander';
import { openClickHouse, queryNumber } from '../core/clickhouse/index.js';
import { fail } from '../core/cliSupport.js';
import { connectNats, SERVER_PID_FILE, USAGE_STREAM } from '../core/nats/index.js';
import { processRssBytes } from '../core/processes.js';
import { projectionTotalQuery } from '../core/testing/rollups.js';
import { DEFAULT_SEED, makeWorld } from '../fixtures/cli.js';
import { publishTraffic } from '../fixtures/publisher.js';
import { Random } from '../fixtures/random.js';
import { createTrafficGenerator } from '../fixtures/traffic.js';
import { createWorldClassifier } from '../fixtures/worldPolicies.js';
import { DEFAULT_CONSUMER } from '../pipeline/pipeline.js';
import { ownUpEnv, Up } from './upProcess.js';

export interface ChaosOptions {
  /** Seconds of traffic, kills and fuzzing. */
  durationS: number;
  /** Events/s of the known set. @default 2000 */
  rate?: number;
  /** Kills spread over the run (nats-server and up, chosen at random). @default one per 15 s, at least 2 */
  kills?: number;
  seed?: number;
  /** Keep the data dir (printed) instead of deleting it. */
  keepData?: boolean;
  log?: (line: string) => void;
  /** Extra fuzzers run beside the traffic; each resolves to what it saw. */
  fuzzers?: readonly ChaosFuzzer[];
}

/** What a fuzzer gets to aim at, and reports back. */
export interface ChaosTarget {
  nc: NatsConnection;
  apiUrl: () => string;
  seed: number;
  signal: AbortSignal;
}

export interface FuzzReport {
  cases: number;
  /** Replies ≥ 500 other than 503 `unavailable` (api) — must be 0. */
  serverErrors: number;
  /** 503 `unavailable` replies: the broker was away (api). */
  unavailable?: number;
  /** Good events among fuzzed frames the pipeline must store (frame fuzzers). */
  expectedEvents: number;
  /** Messages that must land in dead_letters (frame fuzzers). */
  expectedDeadLetterMessages: number;
  failures: string[];
}

export interface ChaosFuzzer {
  name: string;
  run(target: ChaosTarget): Promise<FuzzReport>;
}

export interface ChaosSummary {
  events_published: number;
  events_stored: number;
  duplicates: number;
  lost: number;
  violations_expected: number;
  violations_stored: number;
  violations_duplicated: number;
  rollups_exact: boolean;
  dead_letter_messages: number;
  dead_letter_messages_expected: number;
  kills: number;
  kills_by_target: Record<string, number>;
  nats_restarts_seen: number;
  fuzz_cases: number;
  api_5xx: number;
  /** 503 `unavailable` while the broker was down: the documented answer, not an error. */
  api_503_unavailable: number;
  crashes: number;
  crash_reasons: string[];
  max_rss_mb: number;
  drained: boolean;
  duration_s: number;
  failures: string[];
}

type KillTarget = 'nats-server' | 'up';

const READY = [/^up: api (http:\/\/\S+)/m, /^up: ready; no simulator/m];

/**
 * Ports for a run, below Linux's ephemeral range (32768–60999): `up` comes back on the same
 * ports after a kill, and a port from that range may meanwhile be the source port of some
 * outgoing connection (as happened: the api could not listen again). Free when picked.
 */
async function pickPorts(n: number, random: Random): Promise<number[]> {
  const ports: number[] = [];
  while (ports.length < n) {
    const port = random.int(20_000, 32_000);
    if (ports.includes(port)) continue;
    const free = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (free) ports.push(port);
  }
  return ports;
}

/** `up` restarted on the same data dir and ports whenever it goes away. */
class SupervisedUp {
  current: Up;
  crashes: string[] = [];
  /** nats-server restarts reported by ups that have since been replaced. */
  #pastNatsRestarts = 0;
  #expectedExit = false;
  #restarting: Promise<void> = Promise.resolve();
  #stopped = false;

  constructor(
    readonly env: NodeJS.ProcessEnv,
    readonly ports: { nats: number; api: number; pipeline: number },
    readonly seed: number,
    readonly log: (line: string) => void,
  ) {
    this.current = this.#spawn();
  }

  get natsPort(): number {
    return this.ports.nats;
  }

  get apiUrl(): string {
    return `http://127.0.0.1:${this.ports.api}`;
  }

  get pid(): number {
    return this.current.child.pid ?? -1;
  }

  /** nats-server restarts `up` reported over the run (each up supervises its own server). */
  natsRestarts(): number {
    return this.#pastNatsRestarts + (this.current.stderr.match(/nats-server restarted/g) ?? []).length;
  }

  #spawn(): Up {
    if (this.current as Up | undefined) this.#pastNatsRestarts += (this.current.stderr.match(/nats-server restarted/g) ?? []).length;
    const env = {
      ...this.env,
      TOWERWATCH_NATS_PORT: String(this.ports.nats),
      TOWERWATCH_API_PORT: String(this.ports.api),
      TOWERWATCH_PIPELINE_PORT: String(this.ports.pipeline),
    };
    const up = new Up(['--no-simulator', '--seed', String(this.seed)], env);
    void up.exited.then((exit) => {
      // Only an up that had come up counts: start-up failures are retried by #restart.
      if (this.#stopped || this.#expectedExit || up !== this.current || !READY.every((r) => r.test(up.stderr))) return;
      // Not our kill: a crash. Record it and bring `up` back, as a supervisor would.
      const reason = `up exited by itself (${JSON.stringify(exit)}); last output:\n${up.stderr.split('\n').slice(-15).join('\n')}`;
      this.crashes.push(reason);
      this.log(`chaos: CRASH ${reason}`);
      this.#restarting = this.#restart();
    });
    return up;
  }

  async ready(): Promise<void> {
    await this.#restarting;
    await this.current.waitForOutput(READY, 120_000);
  }

  /** Starts `up` again; a start that fails (a port not yet free) is tried again for a minute. */
  async #restart(): Promise<void> {
    const until = Date.now() + 60_000;
    for (;;) {
      if (this.#stopped) return;
      this.current = this.#spawn();
      this.#expectedExit = false;
      try {
        await this.current.waitForOutput(READY, 120_000);
        return;
      } catch (err) {
        if (Date.now() > until) {
          this.crashes.push(`up did not start again within a minute: ${String(err)}`);
          throw err;
        }
        this.log(
          `chaos: up did not start (${this.current.stderr
            .split('\n')
            .filter((l) => /error/i.test(l))
            .join('; ')}); again in 1 s`,
        );
        await this.current.kill();
        await sleep(1000);
      }
    }
  }

  async kill(): Promise<void> {
    this.#expectedExit = true;
    this.current.child.kill('SIGKILL');
    await this.current.exited;
    this.#restarting = this.#restart();
    await this.#restarting;
  }

  /** SIGTERM and the exit; a non-zero exit is a crash too. */
  async stop(): Promise<void> {
    await this.#restarting.catch(() => undefined);
    this.#stopped = true;
    this.current.child.kill('SIGTERM');
    const exit = await this.current.waitForExit(120_000).catch(async (err: unknown) => {
      await this.current.kill();
      throw err;
    });
    if (exit.code !== 0)
      this.crashes.push(`up did not stop cleanly on SIGTERM (${JSON.stringify(exit)}); last output:\n${this.current.stderr.split('\n').slice(-15).join('\n')}`);
  }

  async destroy(): Promise<void> {
    this.#stopped = true;
    await this.current.kill();
  }
}

export async function runChaos(options: ChaosOptions): Promise<ChaosSummary> {
  const log = options.log ?? (() => undefined);
  const seed = options.seed ?? 1;
  const rate = options.rate ?? 2000;
  const durationMs = options.durationS * 1000;
  const killCount = options.kills ?? Math.max(2, Math.floor(options.durationS / 15));
  const random = new Random(seed);
  const started = performance.now();
  const dataDir = await mkdtemp(join(tmpdir(), 'towerwatch-chaos-'));
  const env = ownUpEnv(dataDir);
  delete env['CLICKHOUSE_URL'];
  const failures: string[] = [];
  const killsByTarget: Record<KillTarget, number> = { 'nats-server': 0, up: 0 };
  const [natsPort, apiPort, pipelinePort] = await pickPorts(3, random.fork('ports'));
  const up = new SupervisedUp(env, { nats: natsPort as number, api: apiPort as number, pipeline: pipelinePort as number }, DEFAULT_SEED, log);
  let nc: NatsConnection | null = null;
  let maxRss = 0;
  const sampler = setInterval(() => void processRssBytes(up.pid).then((bytes) => (maxRss = Math.max(maxRss, bytes / 1024 ** 2))), 250);
  try {
    await up.ready();
    log(`chaos: up ready (nats port ${up.natsPort}, api ${up.apiUrl}, data ${dataDir})`);
    // Reconnects for ever: the broker goes away on purpose.
    nc = await connectNats(`nats://127.0.0.1:${up.natsPort}`, 'towerwatch chaos', { reconnectTimeWait: 100, reconnectJitter: 100 });
    const world = makeWorld({ seed: DEFAULT_SEED });
    const classifier = await createWorldClassifier(world);
    const generator = createTrafficGenerator(world, { seed, classify: classifier.classify, now: () => Date.now(), firstEventId: Date.now() });
    const stopFuzz = new AbortController();

    // The known set, published for the whole run; kills at random points in its middle.
    const publishing = publishTraffic({
      js: jetstream(nc, { timeout: 2000 }),
      world,
      generator,
      rate,
      durationMs,
      frameSize: Math.max(1, Math.round(rate / 10)),
      classify: classifier.classify,
      discoveryPerThousand: 1,
      // Long enough to outlast an up restart (chdb open, policies compiled).
      retryBudgetMs: 120_000,
      seed,
    });
    const fuzzing = Promise.all(
      (options.fuzzers ?? []).map((f) =>
        f.run({ nc: nc as NatsConnection, apiUrl: () => up.apiUrl, seed, signal: stopFuzz.signal }).then(
          (r) => ({ name: f.name, r }),
          (err: unknown): { name: string; r: FuzzReport } => ({
            name: f.name,
            r: { cases: 0, serverErrors: 0, expectedEvents: 0, expectedDeadLetterMessages: 0, failures: [`${f.name} failed: ${String(err)}`] },
          }),
        ),
      ),
    );
    const killing = (async () => {
      const window = durationMs * 0.7;
      const times = Array.from({ length: killCount }, () => durationMs * 0.1 + random.next() * window).sort((a, b) => a - b);
      // Alternate the targets (which comes first is random), so every run kills both.
      const upFirst = random.chance(0.5);
      for (const [i, at] of times.entries()) {
        const wait = at - (performance.now() - started);
        if (wait > 0) await sleep(wait);
        await up.ready();
        const target: KillTarget = (i % 2 === 0) === upFirst ? 'up' : 'nats-server';
        killsByTarget[target]++;
        if (target === 'up') {
          log(`chaos: SIGKILL up (pid ${up.pid}) at ${((performance.now() - started) / 1000).toFixed(1)} s`);
          await up.kill();
        } else {
          const pid = Number((await readFile(join(dataDir, 'nats', SERVER_PID_FILE), 'utf8').catch(() => '')).trim());
          log(`chaos: SIGKILL nats-server (pid ${pid}) at ${((performance.now() - started) / 1000).toFixed(1)} s`);
          if (pid > 0) process.kill(pid, 'SIGKILL');
          await up.current.waitForOutput([/nats-server restarted/], 60_000).catch((err: unknown) => failures.push(String(err)));
        }
      }
    })().catch((err: unknown) => void failures.push(`the kills stopped: ${String(err)}`));
    const progress = await publishing;
    await killing;
    stopFuzz.abort();
    const fuzz = await fuzzing;
    await up.ready();
    log(
      `chaos: published ${progress.events} events (${progress.expectedViolations ?? 0} violations, ${progress.retries} publish retries); waiting for the pipeline to drain`,
    );

    // Drained: nothing pending or unacknowledged, for a second in a row.
    const jsm = await jetstreamManager(nc);
    let drained = false;
    const until = Date.now() + 180_000;
    let quiet = 0;
    while (Date.now() < until && quiet < 4) {
      const info = await jsm.consumers.info(USAGE_STREAM, DEFAULT_CONSUMER).catch(() => null);
      quiet = info && info.num_pending === 0 && info.num_ack_pending === 0 ? quiet + 1 : 0;
      await sleep(250);
    }
    drained = quiet >= 4;
    if (!drained) failures.push('the pipeline did not drain within 180 s');
    const natsRestarts = up.natsRestarts();
    await nc.drain().catch(() => undefined);
    nc = null;
    await up.stop();

    const ch = await openClickHouse({ clickhouseUrl: null, dataDir });
    let summary: ChaosSummary;
    try {
      const stored = await queryNumber(ch, 'SELECT count() FROM app_usage');
      const distinct = await queryNumber(ch, 'SELECT uniqExact(carrier, tower_id, event_id) FROM app_usage');
      const violations = await queryNumber(ch, 'SELECT count() FROM violations');
      // The known set's towers are the world's; fuzzed frames use towers of their own.
      const knownViolations = await queryNumber(ch, `SELECT count() FROM violations WHERE tower_id IN (${world.towers.map((t) => `'${t.id}'`).join(', ')})`);
      const distinctViolations = await queryNumber(ch, 'SELECT uniqExact(alert_id) FROM violations');
      const denied = await queryNumber(ch, "SELECT countIf(verdict = 'deny') FROM app_usage");
      const usageRollup = await queryNumber(ch, projectionTotalQuery('app_usage', 'per_minute'));
      const violationRollup = await queryNumber(ch, projectionTotalQuery('violations', 'per_minute'));
      const deadLetterMessages = await queryNumber(ch, `SELECT uniqExact(stream_seq) FROM dead_letters WHERE stream = '${USAGE_STREAM}'`);
      const fuzzEvents = fuzz.reduce((n, f) => n + f.r.expectedEvents, 0);
      const fuzzDead = fuzz.reduce((n, f) => n + f.r.expectedDeadLetterMessages, 0);
      const expected = progress.events + fuzzEvents;
      summary = {
        events_published: expected,
        events_stored: distinct,
        duplicates: stored - distinct,
        lost: Math.max(0, expected - distinct),
        violations_expected: progress.expectedViolations ?? 0,
        violations_stored: knownViolations,
        violations_duplicated: violations - distinctViolations,
        rollups_exact: usageRollup === stored && violationRollup === violations,
        dead_letter_messages: deadLetterMessages,
        dead_letter_messages_expected: fuzzDead,
        kills: killsByTarget['nats-server'] + killsByTarget.up,
        kills_by_target: killsByTarget,
        nats_restarts_seen: natsRestarts,
        fuzz_cases: fuzz.reduce((n, f) => n + f.r.cases, 0),
        api_5xx: fuzz.reduce((n, f) => n + f.r.serverErrors, 0),
        api_503_unavailable: fuzz.reduce((n, f) => n + (f.r.unavailable ?? 0), 0),
        crashes: up.crashes.length,
        crash_reasons: up.crashes,
        max_rss_mb: Math.round(maxRss),
        drained,
        duration_s: Math.round((performance.now() - started) / 100) / 10,
        failures: [...failures, ...fuzz.flatMap((f) => f.r.failures.slice(0, 20))],
      };
      if (distinct !== expected) summary.failures.push(`stored ${distinct} distinct events, published ${expected}`);
      if (knownViolations !== (progress.expectedViolations ?? 0))
        summary.failures.push(`${knownViolations} violations of the known set stored, ${progress.expectedViolations ?? 0} expected`);
      if (denied !== violations) summary.failures.push(`${denied} deny verdicts in app_usage but ${violations} violations`);
    } finally {
      await ch.close();
    }
    return summary;
  } finally {
    clearInterval(sampler);
    await nc?.close().catch(() => undefined);
    await up.destroy();
    if (options.keepData) log(`chaos: data kept in ${dataDir}`);
    else await rm(dataDir, { recursive: true, force: true });
  }
}

/** The checks a chaos run must pass; empty when it did. */
export function chaosVerdict(s: ChaosSummary, maxRssMb: number): string[] {
  const bad: string[] = [...s.failures];
  if (s.lost !== 0) bad.push(`${s.lost} events lost`);
  if (s.duplicates !== 0) bad.push(`${s.duplicates} duplicate rows`);
  if (s.violations_duplicated !== 0) bad.push(`${s.violations_duplicated} duplicate violations`);
  if (!s.rollups_exact) bad.push('rollups differ from the rows');
  if (s.dead_letter_messages < s.dead_letter_messages_expected)
    bad.push(`${s.dead_letter_messages} dead-lettered messages, expected ≥ ${s.dead_letter_messages_expected}`);
  if (s.api_5xx !== 0) bad.push(`${s.api_5xx} api replies ≥ 500`);
  if (s.crashes !== 0) bad.push(`${s.crashes} crashes`);
  if (s.max_rss_mb > maxRssMb) bad.push(`up peaked at ${s.max_rss_mb} MB RSS (ceiling ${maxRssMb})`);
  if (!s.drained) bad.push('not drained');
  return bad;
}

export const DEFAULT_MAX_RSS_MB = 3072;

export function registerChaosCommand(program: Command, fuzzers: () => ChaosFuzzer[]): void {
  program
    .command('chaos')
    .description('Fault-injection run: kill nats-server and up at random while publishing a known set, fuzzed frames and api requests; check exact counts')
    .option('--duration <seconds>', 'seconds of traffic, kills and fuzzing', '120')
    .option('--rate <events/s>', 'events per second of the known set', '2000')
    .option('--kills <n>', 'kills over the run (default: one per 15 s, at least 2)')
    .option('--seed <n>', 'seed of kills, traffic and fuzzing', '1')
    .option('--max-rss-mb <mb>', 'RSS ceiling of up', String(DEFAULT_MAX_RSS_MB))
    .option('--keep-data', 'keep the data directory')
    .option('--json', 'print the summary as one JSON object')
    .action(async (opts: { duration: string; rate: string; kills?: string; seed: string; maxRssMb: string; keepData?: boolean; json?: boolean }) => {
      const num = (name: string, v: string, min: number): number => {
        const n = Number(v);
        if (!Number.isFinite(n) || n < min) fail(`--${name} must be a number ≥ ${min}, got '${v}'`);
        return n;
      };
      const summary = await runChaos({
        durationS: num('duration', opts.duration, 5),
        rate: num('rate', opts.rate, 1),
        ...(opts.kills !== undefined ? { kills: num('kills', opts.kills, 0) } : {}),
        seed: num('seed', opts.seed, 0),
        keepData: opts.keepData ?? false,
        fuzzers: fuzzers(),
        log: (line) => process.stderr.write(`${line}\n`),
      });
      const bad = chaosVerdict(summary, num('max-rss-mb', opts.maxRssMb, 64));
      if (opts.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
      else process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
      process.stderr.write(bad.length === 0 ? 'chaos: all checks passed\n' : `chaos: FAILED:\n- ${bad.join('\n- ')}\n`);
      process.exitCode = bad.length === 0 ? 0 : 1;
    });
}

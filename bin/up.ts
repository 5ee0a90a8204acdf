/**
 * `towerwatch up`: everything that exists, on embedded defaults, in one process: a local
 * nats-server (unless NATS_URL is set), the JetStream streams, the control plane seeded with
 * the simulated world, the pipeline into ClickHouse (embedded unless CLICKHOUSE_URL is set),
 * and the simulator feeding it. Ctrl-C stops it all, the pipeline finishing its batches.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Command } from 'commander';
import { fail, loadConfigOrExit } from '../core/cliSupport.js';
import { processLog, type LineLevel } from '../core/log.js';
import { connectNats, ensureStreams, NatsServerError, startSupervisedNatsServer, type SupervisedNatsServer } from '../core/nats/index.js';
import { apiOptionsFrom, startApiServer, type ApiServer } from '../api/server.js';
import { DEFAULT_DEMO_PASSWORD } from '../core/config.js';
import { HealthServerListenError } from '../pipeline/healthServer.js';
import { startPipelineService, type PipelineService } from '../pipeline/service.js';
import { DEFAULT_SEED, describeRun, describeSeed, makeWorld, runTraffic, seed } from '../fixtures/cli.js';

interface UpFlags {
  simulator: boolean;
  rate: string;
  seed: string;
  ignoringTowers?: string[];
}

export function registerUpCommand(program: Command): void {
  program
    .command('up')
    .description('Start everything on embedded defaults: nats-server, seeded control plane, pipeline into ClickHouse, simulator')
    .option('--no-simulator', 'do not publish simulated traffic (feed it yourself)')
    .option('--rate <events/s>', 'simulated events per second', '2000')
    .option('--seed <n>', 'seed of the simulated world', String(DEFAULT_SEED))
    .option(
      '--ignoring-towers <ids>',
      "simulated towers that ack remediation commands but do not honour them (comma-separated; * for every tower): the blocks there turn 'ineffective'",
      (v: string) =>
        v
          .split(',')
          .map((t) => t.trim())
          .filter((t) => t !== ''),
    )
    .action(async (opts: UpFlags) => {
      await up(opts);
    });
}

async function up(opts: UpFlags): Promise<void> {
  const config = loadConfigOrExit();
  const logLine = processLog(config);
  const log = (line: string, level?: LineLevel): void => logLine(`up: ${line}`, level);
  const rate = Number(opts.rate);
  const worldSeed = Number(opts.seed);
  if (!Number.isFinite(rate) || rate < 0) fail(`--rate must be a non-negative number, got '${opts.rate}'`);
  if (!Number.isSafeInteger(worldSeed) || worldSeed < 0) fail(`--seed must be a non-negative integer, got '${opts.seed}'`);

  // Signals first: one that arrives while we start must still stop what has started.
  const stop = new AbortController();
  const onSignal = (): void => {
    if (!stop.signal.aborted) log('stopping…');
    stop.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let server: SupervisedNatsServer | null = null;
  let url = config.natsUrl;
  if (url === null) {
    const storeDir = join(config.dataDir, 'nats');
    await mkdir(storeDir, { recursive: true });
    try {
      // Supervised: restarted on the same port and store if it dies; ends with us (pdeathsig).
      server = await startSupervisedNatsServer({ port: config.natsPort, storeDir, log });
    } catch (err) {
      if (err instanceof NatsServerError) fail(err.message);
      throw err;
    }
    url = server.url;
    if (server.endedStaleServer !== null) log(`ended a nats-server (pid ${server.endedStaleServer}) left running on this store by an earlier up`);
    log(`nats-server ${url} (JetStream store in ${storeDir})`);
    void server.failed().then((err) => {
      log(`${err.message}; stopping`, 'error');
      process.exitCode = 1;
      stop.abort();
    });
  } else {
    log(`using NATS at ${url}`);
  }

  let nc: NatsConnection | null = null;
  let pipeline: PipelineService | null = null;
  let api: ApiServer | null = null;
  try {
    if (stop.signal.aborted) return;
    nc = await connectNats(url, 'towerwatch up');
    const streams = await ensureStreams(nc, { replicas: config.natsReplicas });
    log(`streams ${streams.map((s) => `${s.name} (${s.action}, R${s.replicas})`).join(', ')}`);
    const world = makeWorld({ seed: worldSeed });
    log(describeSeed(await seed(nc, world, false, config.demoPassword, config.natsReplicas)));
    // A signal during start-up: start nothing more (the finally stops what has started).
    if (stop.signal.aborted) return;
    try {
      pipeline = await startPipelineService({
        config,
        nc,
        natsUrl: url,
        log: logLine,
        pipeline: { natsRetryMs: config.natsRetrySeconds * 1000 },
      });
    } catch (err) {
      if (!(err instanceof Error && err.cause instanceof HealthServerListenError)) throw err;
      // Not fail(): the finally below must still stop nats-server.
      logLine(err.message, 'error');
      process.exitCode = 1;
      return;
    }
    // The loop ends only on a bug (data and outages are handled inside): stop everything, say why.
    pipeline.pipeline.closed().catch((err: unknown) => {
      log(`pipeline stopped on an error: ${err instanceof Error ? err.message : String(err)}; stopping`, 'error');
      process.exitCode = 1;
      stop.abort();
    });
    // The api shares the pipeline's ClickHouse handle: an embedded engine has one owner process.
    try {
      api = await startApiServer({
        nc,
        clickhouse: pipeline.clickhouse,
        ...apiOptionsFrom(config),
        log: logLine,
      });
    } catch (err) {
      // Not fail(): the finally below must still stop the pipeline and nats-server.
      logLine(`api: ${(err as Error).message}; set TOWERWATCH_API_PORT to a free port (0 picks one)`, 'error');
      process.exitCode = 1;
      return;
    }
    if (stop.signal.aborted) return;
    const password = config.demoPassword === DEFAULT_DEMO_PASSWORD ? DEFAULT_DEMO_PASSWORD : '$TOWERWATCH_DEMO_PASSWORD';
    log(`api ${api.url} (dashboard and REST; live alerts on ${api.url.replace('http', 'ws')}/ws/alerts; OpenAPI at /openapi.json)`);
    log(`sign in as admin@acme (or analyst@acme, viewer@acme, admin@globex, ops@carrier), password ${password}`);
    if (opts.simulator) {
      log(`simulator publishing ${rate > 0 ? `${rate} events/s` : 'as fast as it can'}; Ctrl-C stops everything`);
      const summary = await runTraffic(nc, world, {
        retryBudgetMs: config.natsRetrySeconds * 1000,
        seed: worldSeed,
        rate,
        frameSize: Math.max(1, Math.min(1000, Math.round(rate / 10) || 1000)),
        violationRatio: 0.05,
        badRatio: 0,
        discovery: 1,
        signal: stop.signal,
        log: logLine,
        ...(opts.ignoringTowers === undefined ? {} : { ignoringTowers: opts.ignoringTowers }),
      }).catch((err: unknown) => {
        // The simulator gave up (NATS away past its retry budget): the rest stays up.
        log(`simulator stopped: ${err instanceof Error ? err.message : String(err)}; the pipeline and api keep running, Ctrl-C stops them`);
        return null;
      });
      if (summary) log(describeRun(summary, true));
      if (!stop.signal.aborted) await new Promise<void>((resolve) => stop.signal.addEventListener('abort', () => resolve(), { once: true }));
    } else {
      log('ready; no simulator (--no-simulator). Ctrl-C stops everything');
      if (!stop.signal.aborted) await new Promise<void>((resolve) => stop.signal.addEventListener('abort', () => resolve(), { once: true }));
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await api?.close();
    await pipeline?.close();
    const conn = nc;
    // drain fails when the server is already gone: close, or it reconnects for ever.
    await conn?.drain().catch(() => conn.close());
    await server?.close();
  }
}

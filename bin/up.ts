/**
 * `towerwatch up`: everything that exists, on embedded defaults, in one process: a local
 * nats-server (unless NATS_URL is set), the JetStream streams, the control plane seeded with
 * the simulated world, and the simulator feeding it. Ctrl-C stops it all.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { ConfigError, loadConfig } from '../core/config.js';
import { connectNats } from '../core/natsConnection.js';
import { NatsServerError, startNatsServer, type NatsServerHandle } from '../core/natsServer.js';
import { ensureStreams } from '../core/streams.js';
import { DEFAULT_SEED, describeRun, describeSeed, makeWorld, runTraffic, seed } from '../fixtures/cli.js';

interface UpFlags {
  simulator: boolean;
  rate: string;
  seed: string;
}

export function registerUpCommand(program: Command): void {
  program
    .command('up')
    .description('Start everything on embedded defaults: nats-server, streams, seeded control plane, simulator')
    .option('--no-simulator', 'do not publish simulated traffic (feed it yourself)')
    .option('--rate <events/s>', 'simulated events per second', '2000')
    .option('--seed <n>', 'seed of the simulated world', String(DEFAULT_SEED))
    .action(async (opts: UpFlags) => {
      await up(opts);
    });
}

async function up(opts: UpFlags): Promise<void> {
  const log = (line: string): void => void process.stderr.write(`up: ${line}\n`);
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
  const rate = Number(opts.rate);
  const worldSeed = Number(opts.seed);
  if (!Number.isFinite(rate) || rate < 0) fail(`--rate must be a non-negative number, got '${opts.rate}'`);
  if (!Number.isSafeInteger(worldSeed) || worldSeed < 0) fail(`--seed must be a non-negative integer, got '${opts.seed}'`);

  let server: NatsServerHandle | null = null;
  let url = config.natsUrl;
  if (url === null) {
    const storeDir = join(config.dataDir, 'nats');
    await mkdir(storeDir, { recursive: true });
    try {
      server = await startNatsServer({ port: config.natsPort, storeDir });
    } catch (err) {
      if (err instanceof NatsServerError) fail(err.message);
      throw err;
    }
    url = server.url;
    log(`nats-server ${url} (JetStream store in ${storeDir})`);
  } else {
    log(`using NATS at ${url}`);
  }

  const stop = new AbortController();
  const onSignal = (): void => {
    if (!stop.signal.aborted) log('stopping…');
    stop.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const nc = await connectNats(url, 'towerwatch up');
  try {
    const streams = await ensureStreams(nc);
    log(`streams ${streams.map((s) => `${s.name} (${s.action})`).join(', ')}`);
    const world = makeWorld({ seed: worldSeed });
    log(describeSeed(await seed(nc, world, false)));
    if (opts.simulator) {
      log(`simulator publishing ${rate > 0 ? `${rate} events/s` : 'as fast as it can'}; Ctrl-C stops everything`);
      const summary = await runTraffic(nc, world, {
        seed: worldSeed,
        rate,
        frameSize: Math.max(1, Math.min(1000, Math.round(rate / 10) || 1000)),
        violationRatio: 0.05,
        badRatio: 0,
        discovery: 1,
        signal: stop.signal,
      });
      log(describeRun(summary, true));
    } else {
      log('ready; no simulator (--no-simulator). Ctrl-C stops everything');
      await new Promise<void>((resolve) => stop.signal.addEventListener('abort', () => resolve(), { once: true }));
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await nc.drain().catch(() => undefined);
    await server?.stop();
  }
}

function fail(message: string): never {
  process.stderr.write(`error: ${message}\n`);
  process.exit(1);
}

/**
 * `towerwatch pipeline`: consume USAGE into ClickHouse until SIGINT/SIGTERM, then finish
 * what is in flight and exit. Any number of these may share the durable consumer (with a
 * ClickHouse server; the embedded engine belongs to one process).
 */
import type { Command } from 'commander';
import { fail, loadConfigOrExit, natsUrlOrExit } from '../core/cliSupport.js';
import { processLog } from '../core/log.js';
import { connectNats } from '../core/nats/index.js';
import { HealthServerListenError } from './healthServer.js';
import { startPipelineService } from './service.js';

export function registerPipelineCommand(program: Command): void {
  program
    .command('pipeline')
    .description('Consume usage events from JetStream, evaluate policies, store verdicts in ClickHouse, publish alerts')
    .option('--threads <n>', 'worker threads (default: the cores available)')
    .option(
      '--ack-wait-seconds <s>',
      'ack_wait of the durable consumer when this process creates it: how long an unacked message waits before redelivery (default: 60)',
    )
    .action(async (opts: { threads?: string; ackWaitSeconds?: string }) => {
      const config = loadConfigOrExit();
      const threads = opts.threads === undefined ? undefined : Number(opts.threads);
      if (threads !== undefined && !(Number.isInteger(threads) && threads > 0)) fail(`--threads must be a positive integer, got '${opts.threads}'`);
      const ackWaitSeconds = opts.ackWaitSeconds === undefined ? undefined : Number(opts.ackWaitSeconds);
      if (ackWaitSeconds !== undefined && !(Number.isFinite(ackWaitSeconds) && ackWaitSeconds >= 1))
        fail(`--ack-wait-seconds must be a number ≥ 1, got '${opts.ackWaitSeconds}'`);
      const url = natsUrlOrExit(config);
      const log = processLog(config);
      const nc = await connectNats(url, 'towerwatch pipeline').catch((err: unknown) => fail((err as Error).message));
      const service = await startPipelineService({
        config,
        nc,
        natsUrl: url,
        log,
        pipeline: {
          natsRetryMs: config.natsRetrySeconds * 1000,
          ...(threads ? { threads } : {}),
          ...(ackWaitSeconds ? { ackWaitMs: ackWaitSeconds * 1000 } : {}),
        },
      }).catch((err: unknown) => {
        if (err instanceof Error && err.cause instanceof HealthServerListenError) fail(err.message);
        throw err;
      });
      log(`pipeline: consuming from ${url}`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
        service.pipeline.closed().then(resolve, (err: unknown) => {
          log(`pipeline: stopped on an error: ${(err as Error).message}`, 'error');
          process.exitCode = 1;
          resolve();
        });
      });
      log('pipeline: stopping, finishing the batches in flight…');
      await service.close();
      await nc.drain();
      log('pipeline: stopped');
    });
}

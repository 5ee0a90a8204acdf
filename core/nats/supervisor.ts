/**
 * A local nats-server kept running: if it dies (killed, crashed, OOM), it is started again on
 * the same port and store, so clients reconnect to the address they know and JetStream resumes
 * from its files. Restarts back off; a server that cannot be brought back within
 * `giveUpAfterMs` is reported through `failed()`, for the owner to stop cleanly.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { startNatsServer, type NatsServerExit, type NatsServerHandle, type NatsServerOptions } from './server.js';
import { backoffDelay } from '../retry.js';
import type { LogLine } from '../log.js';

/** @default 60 s of failed restarts before giving up. */
export const DEFAULT_GIVE_UP_AFTER_MS = 60_000;

export interface SupervisedNatsServerOptions extends NatsServerOptions {
  log?: LogLine;
  /** @default DEFAULT_GIVE_UP_AFTER_MS */
  giveUpAfterMs?: number;
}

export interface SupervisedNatsServer extends AsyncDisposable {
  readonly url: string;
  readonly port: number;
  readonly storeDir: string | null;
  /** Pid of the server running now (changes on a restart). */
  pid(): number;
  /** Times the server was started again after dying. */
  restarts(): number;
  /** Pid of a stale server of a dead earlier owner ended at first start, if any. */
  readonly endedStaleServer: number | null;
  /** Resolves with the reason if the server could not be brought back. */
  failed(): Promise<Error>;
  /** Stops supervising and ends the server. Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const describeExit = (e: NatsServerExit): string => (e.signal !== null ? `signal ${e.signal}` : `code ${String(e.code)}`);

export async function startSupervisedNatsServer(options: SupervisedNatsServerOptions): Promise<SupervisedNatsServer> {
  const { log = () => undefined, giveUpAfterMs = DEFAULT_GIVE_UP_AFTER_MS, ...serverOptions } = options;
  const first = await startNatsServer(serverOptions);
  // Later starts must come back where clients look: the port the first one got.
  const again: NatsServerOptions = {
    ...serverOptions,
    port: first.port,
    ...(first.storeDir !== null && serverOptions.storeDir !== undefined ? { storeDir: first.storeDir } : {}),
  };
  let current: NatsServerHandle = first;
  let restarts = 0;
  let stopping = false;
  let reportFailure: (err: Error) => void = () => undefined;
  const failed = new Promise<Error>((resolve) => (reportFailure = resolve));

  const watch = async (): Promise<void> => {
    for (;;) {
      if (stopping) return;
      const exit = await current.exited();
      if (stopping) return;
      await current.close(); // removes its temporary files and exit hook
      log(`nats-server (pid ${current.pid}) exited unexpectedly (${describeExit(exit)}); restarting it on port ${first.port}`, 'warn');
      const since = Date.now();
      for (let attempt = 1; ; attempt++) {
        if (stopping) return;
        try {
          current = await startNatsServer(again);
          restarts++;
          log(`nats-server restarted (pid ${current.pid}) on ${current.url}`);
          break;
        } catch (err) {
          if (Date.now() - since > giveUpAfterMs) {
            reportFailure(new Error(`nats-server could not be restarted within ${giveUpAfterMs / 1000} s: ${(err as Error).message}`, { cause: err }));
            return;
          }
          const wait = backoffDelay(attempt, 200, 5_000);
          log(`nats-server restart failed (${(err as Error).message.split('\n')[0]}); trying again in ${wait} ms`, 'warn');
          await sleep(wait);
        }
      }
    }
  };
  const watching = watch().catch((err: unknown) => reportFailure(err instanceof Error ? err : new Error(String(err))));

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      stopping = true;
      await current.close();
      await watching;
      await current.close(); // one started while we were stopping
    })();
    return stopped;
  };
  return {
    url: first.url,
    port: first.port,
    storeDir: first.storeDir,
    endedStaleServer: first.endedStaleServer,
    pid: () => current.pid,
    restarts: () => restarts,
    failed: () => failed,
    close: stop,
    [Symbol.asyncDispose]: stop,
  };
}

/**
 * One JetStream store, one nats-server, one owner. The process that starts a server on a store
 * writes its pid in `towerwatch-owner.pid`; the server writes its own in `nats-server.pid`. A
 * later start finds either a live owner (refuse: two servers on one store corrupt it) or a dead
 * one, whose server may have outlived it (a SIGKILLed `up` on a machine without setpriv): that
 * server is ended before a new one starts.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { processAlive, processCmdline } from '../processes.js';

export const OWNER_PID_FILE = 'towerwatch-owner.pid';
export const SERVER_PID_FILE = 'nats-server.pid';
const STALE_STOP_TIMEOUT_MS = 5_000;

export interface StoreClaim {
  /** Where the server is to write its pid (nats-server's `pid_file`). */
  readonly serverPidFile: string;
  /** Pid of a stale server of an earlier owner that this claim ended, if any. */
  readonly endedStaleServer: number | null;
  release(): Promise<void>;
}

async function readPid(file: string): Promise<number | null> {
  try {
    const pid = Number((await readFile(file, 'utf8')).trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (!processAlive(pid)) return true;
    await sleep(25);
  }
  return !processAlive(pid);
}

/** Claims `storeDir` for this process; throws when another live process holds it. */
export async function claimStore(storeDir: string): Promise<StoreClaim> {
  await mkdir(storeDir, { recursive: true });
  const ownerFile = join(storeDir, OWNER_PID_FILE);
  const serverPidFile = join(storeDir, SERVER_PID_FILE);

  const owner = await readPid(ownerFile);
  // A pid can be reused: only a live node process counts as an owner.
  if (owner !== null && owner !== process.pid && processAlive(owner) && /\bnode\b|towerwatch/.test(await processCmdline(owner))) {
    throw new Error(`the NATS store ${storeDir} is in use by process ${owner} (another towerwatch up?): stop it first, or use another TOWERWATCH_DATA_DIR`);
  }
  await writeFile(ownerFile, `${process.pid}\n`, 'utf8');

  let endedStaleServer: number | null = null;
  const stale = await readPid(serverPidFile);
  if (stale !== null && processAlive(stale) && /nats-server/.test(await processCmdline(stale))) {
    process.kill(stale, 'SIGTERM');
    if (!(await waitGone(stale, STALE_STOP_TIMEOUT_MS))) {
      process.kill(stale, 'SIGKILL');
      await waitGone(stale, STALE_STOP_TIMEOUT_MS);
    }
    endedStaleServer = stale;
  }
  await rm(serverPidFile, { force: true });

  return {
    serverPidFile,
    endedStaleServer,
    async release() {
      if ((await readPid(ownerFile)) === process.pid) await rm(ownerFile, { force: true });
    },
  };
}

/**
 * Start and stop a real nats-server child process, modelled on nats.js `nst/src/launcher.ts`:
 * a temporary config file, an ephemeral port read back from the server's ports file, readiness
 * by TCP connect while racing an early exit, clear errors, and the store deleted on stop when
 * we created it.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CodedError, type CodeOf } from '../codedError.js';
import { claimStore, type StoreClaim } from './storeLock.js';

export const DEFAULT_NATS_HOST = '127.0.0.1';
export const DEFAULT_NATS_BINARY = 'nats-server';
/** JetStream memory limit; streams here are file-backed, memory is for consumers and caches. */
export const DEFAULT_MAX_MEMORY_STORE = 256 * 1024 ** 2;
/**
 * JetStream file limit. nats-server reserves every stream's `max_bytes` against it, so it must
 * cover the sum of STREAM_LIMITS plus KV buckets; it is a ceiling, not a preallocation.
 */
export const DEFAULT_MAX_FILE_STORE = 16 * 1024 ** 3;
export const DEFAULT_START_TIMEOUT_MS = 10_000;
export const DEFAULT_STOP_TIMEOUT_MS = 5_000;
/** Lines of server output kept for error messages. */
const OUTPUT_LINES = 200;
const POLL_MS = 20;

export interface NatsServerOptions {
  /** Client port; 0 or undefined picks a free one (race-free: the server binds it itself). */
  port?: number;
  /** @default '127.0.0.1' */
  host?: string;
  /** JetStream store directory; undefined: a fresh temporary directory, deleted on stop. */
  storeDir?: string;
  /** @default true */
  jetstream?: boolean;
  /** Let the server write its log here instead of to our in-memory buffer. */
  logFile?: string;
  /** @default 'nats-server' (looked up on PATH) */
  binary?: string;
  /** Environment of the child; its PATH is used to find `binary`. @default process.env */
  env?: NodeJS.ProcessEnv;
  /** @default DEFAULT_MAX_MEMORY_STORE */
  maxMemoryStore?: number;
  /** @default DEFAULT_MAX_FILE_STORE */
  maxFileStore?: number;
  /** @default 10000 */
  startTimeoutMs?: number;
  /** Grace after SIGTERM before SIGKILL. @default 5000 */
  stopTimeoutMs?: number;
  /** Server name, unique in a cluster (JetStream clusters require one). */
  serverName?: string;
  /** Joins a cluster: route listener on `port`, routes to every member (its own is ignored by the server). */
  cluster?: NatsClusterMembership;
}

export interface NatsClusterMembership {
  name: string;
  /** Route port of this server (fixed: the other members' routes name it). */
  port: number;
  /** `nats-route://host:port` of every member. */
  routes: readonly string[];
}

export interface NatsServerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface NatsServerHandle extends AsyncDisposable {
  /** `nats://host:port` */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** JetStream store directory (null when JetStream is off). */
  readonly storeDir: string | null;
  readonly pid: number;
  /** Pid of a server left running on this store by a dead earlier owner, ended before this start. */
  readonly endedStaleServer: number | null;
  /** Last lines the server printed (empty when `logFile` is set). */
  output(): string;
  /** Resolves when the process exits, for whatever reason. */
  exited(): Promise<NatsServerExit>;
  /** SIGTERM, then SIGKILL after `stopTimeoutMs`; removes temporary files. Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export const NatsServerErrorCode = {
  NotFound: 'nats_server_not_found',
  PortInUse: 'nats_port_in_use',
  StoreInUse: 'nats_store_in_use',
  ExitedEarly: 'nats_server_exited',
  StartTimeout: 'nats_server_start_timeout',
} as const;
export type NatsServerErrorCode = CodeOf<typeof NatsServerErrorCode>;

export class NatsServerError extends CodedError<NatsServerErrorCode> {}

/** The lowest port Linux gives outgoing connections as their source (and a listen on port 0). */
function lowestEphemeralPort(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    if (Number.isInteger(low)) return low;
  } catch {
    // not Linux: the IANA range
  }
  return 49152;
}

const LOWEST_PICKED_PORT = 10_000;

function listenOnce(host: string, port: number): Promise<number | null> {
  return new Promise((resolvePort) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolvePort(null));
    srv.listen(port, host, () => {
      const addr = srv.address();
      const bound = typeof addr === 'object' && addr !== null ? addr.port : null;
      srv.close(() => resolvePort(bound));
    });
  });
}

/**
 * A port free right now on `host`, for a server started on it later (a cluster member, whose
 * peers must know its ports in advance). Picked below the ephemeral range: a port from that
 * range (what a listen on port 0 gets) is also a client connection's source port, so a member
 * started or restarted on it moments later could find it taken by an outgoing connection (CI
 * saw it). Ports in `avoid` are not picked. Another process may still take it first.
 */
export async function findFreePort(host = DEFAULT_NATS_HOST, avoid: ReadonlySet<number> = new Set()): Promise<number> {
  const span = lowestEphemeralPort() - LOWEST_PICKED_PORT;
  for (let i = 0; span >= 1_000 && i < 100; i++) {
    const port = LOWEST_PICKED_PORT + Math.floor(Math.random() * span);
    if (!avoid.has(port) && (await listenOnce(host, port)) !== null) return port;
  }
  for (;;) {
    const port = await listenOnce(host, 0);
    if (port === null) throw new Error(`no free port on ${host}`);
    if (!avoid.has(port)) return port;
  }
}

/** Keeps the last `max` lines of a stream of chunks. */
class TailBuffer {
  readonly #lines: string[] = [];
  #partial = '';
  constructor(readonly max: number) {}
  push(chunk: string): void {
    const parts = (this.#partial + chunk).split('\n');
    this.#partial = parts.pop() ?? '';
    this.#lines.push(...parts);
    if (this.#lines.length > this.max) this.#lines.splice(0, this.#lines.length - this.max);
  }
  tail(n = this.max): string {
    const all = this.#partial === '' ? this.#lines : [...this.#lines, this.#partial];
    return all.slice(-n).join('\n');
  }
}

function tcpReachable(host: string, port: number): Promise<boolean> {
  return new Promise((res) => {
    const sock = netConnect({ host, port });
    sock.once('connect', () => {
      sock.destroy();
      res(true);
    });
    sock.once('error', () => {
      sock.destroy();
      res(false);
    });
  });
}

async function readPortsFile(file: string): Promise<number | null> {
  try {
    const json = JSON.parse(await readFile(file, 'utf8')) as { nats?: unknown };
    const first = Array.isArray(json.nats) ? json.nats[0] : undefined;
    if (typeof first !== 'string') return null;
    const port = Number(first.slice(first.lastIndexOf(':') + 1));
    return Number.isInteger(port) && port > 0 ? port : null;
  } catch {
    return null; // not written yet, or written half-way
  }
}

/** util-linux `setpriv` (Essential on Debian/Ubuntu); without it a SIGKILLed parent can orphan the server. */
const PDEATHSIG_WRAPPER: string | null = (() => {
  for (const candidate of ['/usr/bin/setpriv', '/bin/setpriv']) {
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // next
    }
  }
  return null;
})();

/** Whether `binary` can be run (a path, or a name on PATH): with the wrapper, ENOENT is setpriv's exit 127. */
function findBinary(binary: string, env: NodeJS.ProcessEnv): boolean {
  const candidates = binary.includes('/')
    ? [binary]
    : (env['PATH'] ?? '')
        .split(':')
        .filter(Boolean)
        .map((d) => join(d, binary));
  return candidates.some((c) => {
    try {
      accessSync(c, fsConstants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** Starts nats-server and resolves once it accepts client connections. */
export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServerHandle> {
  const host = options.host ?? DEFAULT_NATS_HOST;
  const requestedPort = options.port ?? 0;
  if (!Number.isInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) {
    throw new RangeError(`options.port must be an integer 0–65535, got ${String(options.port)}`);
  }
  const jetstream = options.jetstream ?? true;
  const binary = options.binary ?? DEFAULT_NATS_BINARY;
  const startTimeoutMs = options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  const stopTimeoutMs = options.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;

  // Config file and ports file live in a private dir; the store only when we own it.
  const workDir = await mkdtemp(join(tmpdir(), 'towerwatch-nats-'));
  const ownsStore = jetstream && options.storeDir === undefined;
  const storeDir = jetstream ? (options.storeDir ?? join(workDir, 'store')) : null;

  // A store we were given may hold a server of an earlier run whose parent was SIGKILLed, or
  // belong to a live process: end the first, refuse the second. Two servers on one store never.
  let claim: StoreClaim | null = null;
  if (storeDir !== null && !ownsStore) {
    try {
      claim = await claimStore(storeDir);
    } catch (err) {
      await rm(workDir, { recursive: true, force: true });
      throw new NatsServerError(NatsServerErrorCode.StoreInUse, (err as Error).message, { cause: err });
    }
  }

  const conf: Record<string, unknown> = {
    host,
    // -1 lets the server pick the port; it tells us which through the ports file.
    port: requestedPort === 0 ? -1 : requestedPort,
    ports_file_dir: workDir,
  };
  if (storeDir !== null) {
    conf['jetstream'] = {
      store_dir: storeDir,
      max_memory_store: options.maxMemoryStore ?? DEFAULT_MAX_MEMORY_STORE,
      max_file_store: options.maxFileStore ?? DEFAULT_MAX_FILE_STORE,
    };
  }
  if (options.serverName !== undefined) conf['server_name'] = options.serverName;
  if (options.cluster !== undefined) {
    conf['cluster'] = { name: options.cluster.name, listen: `${host}:${options.cluster.port}`, routes: [...options.cluster.routes] };
  }
  if (claim !== null) conf['pid_file'] = claim.serverPidFile;
  if (options.logFile !== undefined) conf['log_file'] = options.logFile;
  const confFile = join(workDir, 'nats-server.conf');
  // The NATS config format accepts JSON, which also takes care of quoting paths.
  await writeFile(confFile, JSON.stringify(conf, null, 2), 'utf8');

  const cleanupFiles = async () => {
    await claim?.release();
    await rm(workDir, { recursive: true, force: true });
    if (ownsStore && storeDir !== null) await rm(storeDir, { recursive: true, force: true });
  };

  const env = options.env ?? process.env;
  if (PDEATHSIG_WRAPPER && !findBinary(binary, env)) {
    // Through the wrapper a missing binary is not a spawn ENOENT: say the same clear thing.
    await cleanupFiles();
    throw await startError(
      { type: 'spawn_error', error: Object.assign(new Error(`spawn ${binary} ENOENT`), { code: 'ENOENT' }) },
      { binary, host, requestedPort, startTimeoutMs, logTail: async () => '' },
    );
  }
  const out = new TailBuffer(OUTPUT_LINES);
  let child: ChildProcess;
  try {
    // setpriv --pdeathsig: the kernel sends the server SIGTERM when we die, even by SIGKILL,
    // so no orphan outlives us holding the port and the store (it execs: same pid).
    const [command, args] = PDEATHSIG_WRAPPER ? [PDEATHSIG_WRAPPER, ['--pdeathsig', 'SIGTERM', '--', binary, '-c', confFile]] : [binary, ['-c', confFile]];
    child = spawn(command, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
      // Its own process group: Ctrl-C in a terminal reaches only us, and we stop the server
      // after the pipeline has finished its batches (the exit hook still kills it with us).
      detached: true,
    });
  } catch (err) {
    await cleanupFiles();
    throw err;
  }
  // Always drain both pipes: a full pipe would block the server.
  child.stdout?.setEncoding('utf8').on('data', (c: string) => out.push(c));
  child.stderr?.setEncoding('utf8').on('data', (c: string) => out.push(c));

  const exited = new Promise<NatsServerExit>((res) => {
    child.once('exit', (code, signal) => res({ code, signal }));
  });
  // `on`, not `once`: a later error (a failed kill) must not go unhandled.
  const spawnFailed = new Promise<Error>((res) => child.on('error', res));

  const logTail = async (n: number): Promise<string> => {
    if (options.logFile === undefined) return out.tail(n);
    try {
      return (await readFile(options.logFile, 'utf8')).trimEnd().split('\n').slice(-n).join('\n');
    } catch {
      return out.tail(n);
    }
  };

  type Outcome = { type: 'ready'; port: number } | { type: 'exit'; exit: NatsServerExit } | { type: 'spawn_error'; error: Error } | { type: 'timeout' };
  let settled = false;
  const ready = (async (): Promise<Outcome> => {
    const deadline = Date.now() + startTimeoutMs;
    while (!settled && Date.now() < deadline) {
      if (child.pid !== undefined) {
        // nats-server writes the ports file once its listeners are up.
        const port = await readPortsFile(join(workDir, `nats-server_${child.pid}.ports`));
        if (port !== null && (await tcpReachable(host, port))) return { type: 'ready', port };
      }
      await sleep(POLL_MS);
    }
    return { type: 'timeout' };
  })();
  const outcome = await Promise.race<Outcome>([
    ready,
    exited.then((exit) => ({ type: 'exit', exit }) as const),
    spawnFailed.then((error) => ({ type: 'spawn_error', error }) as const),
  ]);
  settled = true;
  await ready; // let the poll loop finish so no timer outlives us

  if (outcome.type !== 'ready') {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      child.kill('SIGKILL');
      await exited;
    }
    await cleanupFiles();
    throw await startError(outcome, { binary, host, requestedPort, startTimeoutMs, logTail });
  }

  const port = outcome.port;
  const pid = child.pid ?? -1;
  // If our process dies without close(), do not leave an orphan server holding the port.
  const killOnExit = () => {
    child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        const timedOut = await Promise.race([
          exited.then(() => false),
          new Promise<boolean>((r) => {
            timer = setTimeout(() => r(true), stopTimeoutMs);
          }),
        ]);
        clearTimeout(timer);
        if (timedOut) child.kill('SIGKILL');
      }
      await exited;
      process.removeListener('exit', killOnExit);
      await cleanupFiles();
    })();
    return stopping;
  };

  return {
    url: `nats://${host}:${port}`,
    host,
    port,
    storeDir,
    pid,
    endedStaleServer: claim?.endedStaleServer ?? null,
    output: () => out.tail(),
    exited: () => exited,
    close: stop,
    [Symbol.asyncDispose]: stop,
  };
}

async function startError(
  outcome: { type: 'exit'; exit: NatsServerExit } | { type: 'spawn_error'; error: Error } | { type: 'timeout' },
  ctx: {
    binary: string;
    host: string;
    requestedPort: number;
    startTimeoutMs: number;
    logTail: (n: number) => Promise<string>;
  },
): Promise<NatsServerError> {
  if (outcome.type === 'spawn_error') {
    const code = (outcome.error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      const where = ctx.binary.includes('/') ? `at ${ctx.binary}` : 'on PATH';
      return new NatsServerError(NatsServerErrorCode.NotFound, `${ctx.binary} not found ${where}: install it with \`apt-get install nats-server\``, {
        cause: outcome.error,
      });
    }
    return new NatsServerError(NatsServerErrorCode.ExitedEarly, `could not start ${ctx.binary}: ${outcome.error.message}`, {
      cause: outcome.error,
    });
  }
  const tail = await ctx.logTail(20);
  if (/address already in use/i.test(tail)) {
    return new NatsServerError(NatsServerErrorCode.PortInUse, `port ${ctx.requestedPort} is already in use — set TOWERWATCH_NATS_PORT or NATS_URL`);
  }
  if (outcome.type === 'timeout') {
    return new NatsServerError(
      NatsServerErrorCode.StartTimeout,
      `nats-server did not accept connections on ${ctx.host} within ${ctx.startTimeoutMs} ms; last output:\n${tail}`,
    );
  }
  const how = outcome.exit.signal !== null ? `signal ${outcome.exit.signal}` : `code ${String(outcome.exit.code)}`;
  return new NatsServerError(NatsServerErrorCode.ExitedEarly, `nats-server exited during start-up (${how}); last output:\n${tail}`);
}

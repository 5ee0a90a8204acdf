/**
 * Test helper: a JetStream cluster of `n` real nats-servers on this machine (client and route
 * ports picked free once, a store each), ready when JetStream answers through it. A member can
 * be SIGKILLed and restarted on the same ports and store, as a failed node comes back.
 *
 * ```ts
 * const cluster = await startNatsCluster(3);
 * const nc = await connectNats(cluster.url, 'test'); // every member: the client fails over
 * await cluster.kill(await cluster.streamLeader(nc, 'USAGE'));
 * ```
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { connectNats, findFreePort, type NatsServerHandle, type NatsServerOptions, startNatsServer } from '../nats/index.js';

export interface NatsCluster extends AsyncDisposable {
  readonly size: number;
  /** Every member's client URL, comma-separated: what NATS_URL takes. */
  readonly url: string;
  readonly urls: readonly string[];
  /** Server names, `n1` … `nN`, as JetStream reports leaders and peers. */
  readonly names: readonly string[];
  /** The running server of member `i`, or null while it is down. */
  member(i: number): NatsServerHandle | null;
  /** Ends member `i` by `signal` (default SIGKILL: no goodbye to its peers) and waits for its exit. */
  kill(i: number, signal?: NodeJS.Signals): Promise<void>;
  /** Starts member `i` again on its ports and store. */
  restart(i: number): Promise<void>;
  /** Index of the member leading `stream` (its RAFT group), asked through `nc`. */
  streamLeader(nc: NatsConnection, stream: string): Promise<number>;
  /** Stops every member and removes the stores. Idempotent. */
  close(): Promise<void>;
}

export interface NatsClusterOptions {
  /** @default 'towerwatch-test' */
  name?: string;
  /** How long to wait for JetStream to answer through the cluster. @default 30000 */
  readyTimeoutMs?: number;
}

const HOST = '127.0.0.1';

export async function startNatsCluster(n: number, options: NatsClusterOptions = {}): Promise<NatsCluster> {
  if (!Number.isInteger(n) || n < 1 || n > 7) throw new RangeError(`a cluster of 1–7 servers, got ${String(n)}`);
  const dir = await mkdtemp(join(tmpdir(), 'towerwatch-nats-cluster-'));
  const picked = new Set<number>();
  const pick = async (): Promise<number> => {
    const port = await findFreePort(HOST, picked);
    picked.add(port);
    return port;
  };
  const clientPorts: number[] = [];
  const routePorts: number[] = [];
  for (let i = 0; i < n; i++) {
    clientPorts.push(await pick());
    routePorts.push(await pick());
  }
  const names = clientPorts.map((_, i) => `n${i + 1}`);
  const urls = clientPorts.map((p) => `nats://${HOST}:${p}`);
  const routes = routePorts.map((p) => `nats-route://${HOST}:${p}`);
  const optionsOf = (i: number): NatsServerOptions => ({
    host: HOST,
    port: clientPorts[i]!,
    storeDir: join(dir, names[i]!),
    serverName: names[i]!,
    // Several JetStream servers on one machine: keep each one's reservations modest.
    maxFileStore: 8 * 1024 ** 3,
    maxMemoryStore: 64 * 1024 ** 2,
    // One server alone is no JetStream cluster (it would wait for peers to elect a leader).
    ...(n > 1 ? { cluster: { name: options.name ?? 'towerwatch-test', port: routePorts[i]!, routes } } : {}),
  });
  const members: Array<NatsServerHandle | null> = new Array<NatsServerHandle | null>(n).fill(null);
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      await Promise.allSettled(members.flatMap((m) => (m ? [m.close()] : [])));
      await rm(dir, { recursive: true, force: true });
    })());
  const index = (i: number): number => {
    if (!Number.isInteger(i) || i < 0 || i >= n) throw new RangeError(`no member ${String(i)} in a cluster of ${n}`);
    return i;
  };

  try {
    const started = await Promise.allSettled(names.map((_, i) => startNatsServer(optionsOf(i))));
    started.forEach((r, i) => {
      if (r.status === 'fulfilled') members[i] = r.value;
    });
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    await jetStreamReady(urls.join(','), options.readyTimeoutMs ?? 30_000);
  } catch (err) {
    await close();
    throw err;
  }

  return {
    size: n,
    url: urls.join(','),
    urls,
    names,
    member: (i) => members[index(i)] ?? null,
    async kill(i, signal = 'SIGKILL') {
      const m = members[index(i)];
      if (!m) return;
      members[i] = null;
      try {
        process.kill(m.pid, signal);
      } catch {
        // already gone
      }
      await m.exited();
      await m.close(); // its temporary files; the store stays
    },
    async restart(i) {
      if (members[index(i)]) throw new Error(`member ${i} (${names[i]!}) is running`);
      members[i] = await startNatsServer(optionsOf(i));
    },
    async streamLeader(nc, stream) {
      const jsm = await jetstreamManager(nc);
      const leader = (await jsm.streams.info(stream)).cluster?.leader;
      const i = names.indexOf(leader ?? '');
      if (i < 0) throw new Error(`stream ${stream} has no leader among ${names.join(', ')} (reported: ${String(leader)})`);
      return i;
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** Polls JetStream through the cluster until it answers (a meta leader is elected). */
async function jetStreamReady(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const nc = await connectNats(url, 'cluster readiness', { maxReconnectAttempts: -1 });
  try {
    for (;;) {
      try {
        await (await jetstreamManager(nc, { timeout: 2_000 })).getAccountInfo();
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`JetStream did not answer through the cluster within ${timeoutMs} ms`, { cause: err });
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  } finally {
    await nc.close();
  }
}

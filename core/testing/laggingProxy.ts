/**
 * A TCP proxy whose server-to-client bytes arrive `lagMs` late, in order: a process on a slow
 * link, whose view of a broker trails the others'. Client-to-server bytes pass at once.
 */
import { connect, createServer, type Socket } from 'node:net';

export interface LaggingProxy {
  /** `nats://127.0.0.1:<port>` (the target's scheme). */
  readonly url: string;
  close(): Promise<void>;
}

export async function startLaggingProxy(targetUrl: string, lagMs: number): Promise<LaggingProxy> {
  const target = new URL(targetUrl);
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    // Timers of one delay fire in the order they were set: the stream stays in order.
    upstream.on('data', (chunk: Buffer) => setTimeout(() => client.destroyed || client.write(chunk), lagMs));
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const s of [client, upstream]) s.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('lagging proxy: no port');
  return {
    url: `${target.protocol}//127.0.0.1:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** The one place that opens NATS connections, so every process reconnects the same way. */
import { connect, type NatsConnection, type NodeConnectionOptions, type Status } from '@nats-io/transport-node';
import { redactUrl } from '../config.js';

/**
 * Reconnect for ever (a service outliving a NATS restart or failover should not need its own
 * restart), every second plus jitter, so a cluster restart is not met by a thundering herd.
 */
export const DEFAULT_CONNECTION_OPTIONS = {
  maxReconnectAttempts: -1,
  reconnectTimeWait: 1_000,
  reconnectJitter: 500,
  pingInterval: 20_000,
  timeout: 5_000,
} as const satisfies NodeConnectionOptions;

/**
 * Connects to `url` (one URL or a comma-separated list) as client `name` (shown in the server's
 * monitoring). The first connect fails fast; only later disconnects are retried.
 */
export async function connectNats(url: string, name: string, options: Omit<NodeConnectionOptions, 'servers' | 'name'> = {}): Promise<NatsConnection> {
  const servers = url
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  try {
    return await connect({ ...DEFAULT_CONNECTION_OPTIONS, ...options, servers, name });
  } catch (err) {
    throw new Error(`cannot connect to NATS at ${redactUrl(url)}: ${err instanceof Error ? err.message : String(err)}`, {
      cause: err,
    });
  }
}

/** NATS connection state from `nc.status()`, counted. */
export class NatsConnectionWatch {
  connected: boolean;
  disconnects = 0;
  reconnects = 0;
  readonly #iterator: AsyncIterable<Status>;

  constructor(private readonly nc: NatsConnection) {
    this.connected = !nc.isClosed();
    this.#iterator = nc.status();
    void this.#watch();
  }

  /** Connected as far as the client knows (a closed connection never is). */
  isConnected(): boolean {
    return this.connected && !this.nc.isClosed();
  }

  async #watch(): Promise<void> {
    try {
      for await (const s of this.#iterator) {
        if (s.type === 'disconnect') {
          this.connected = false;
          this.disconnects++;
        } else if (s.type === 'reconnect') {
          this.connected = true;
          this.reconnects++;
        } else if (s.type === 'close') {
          this.connected = false;
        }
      }
    } catch {
      // the iterator ends with the connection
    }
    this.connected = false;
  }

  /** Stops watching (the connection itself is the caller's). */
  close(): void {
    (this.#iterator as { stop?: () => void }).stop?.();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

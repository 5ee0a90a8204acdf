/**
 * Test helper: one real nats-server per test file (temporary store, free port), torn down
 * after the file's tests, with every connection opened through it closed first.
 *
 * ```ts
 * import { withNats } from '../testing/natsFixture.js';
 * const nats = await withNats(); // top level: registers node:test `after()` for the file
 * test('…', async () => { const nc = await nats.connect(); … });
 * ```
 */
import { randomBytes } from 'node:crypto';
import { after } from 'node:test';
import type { NatsConnection, NodeConnectionOptions } from '@nats-io/transport-node';
import { connectNats, type NatsServerHandle, type NatsServerOptions, startNatsServer } from '../nats/index.js';

export interface NatsFixture {
  readonly server: NatsServerHandle;
  readonly url: string;
  /** A connection closed automatically at teardown (closing it earlier is fine). */
  connect(name?: string, options?: Omit<NodeConnectionOptions, 'servers' | 'name'>): Promise<NatsConnection>;
  /** Closes connections and stops the server; registered as teardown, idempotent. */
  close(): Promise<void>;
}

/** Anything with an `after(fn)` hook: a node:test TestContext or SuiteContext. */
export interface TeardownScope {
  after(fn: () => Promise<void>): void;
}

/**
 * Starts the server and registers its teardown on `scope` (default: the file-level node:test
 * `after`). Tests should share one fixture per file and isolate by names ({@link uniqueName}).
 */
export async function withNats(scope?: TeardownScope, options: NatsServerOptions = {}): Promise<NatsFixture> {
  const server = await startNatsServer(options);
  const connections = new Set<NatsConnection>();
  let stopping: Promise<void> | undefined;
  const fixture: NatsFixture = {
    server,
    url: server.url,
    async connect(name = 'test', options = {}) {
      const nc = await connectNats(server.url, name, {
        // Tests should fail, not hang, if the server went away (unless they ask to ride it out).
        maxReconnectAttempts: 0,
        ...options,
      });
      connections.add(nc);
      return nc;
    },
    close() {
      stopping ??= (async () => {
        await Promise.allSettled([...connections].map((nc) => (nc.isClosed() ? Promise.resolve() : nc.close())));
        await server.close();
      })();
      return stopping;
    },
  };
  if (scope) scope.after(() => fixture.close());
  else after(() => fixture.close());
  return fixture;
}

/** A name unique within the shared server (for buckets, streams, subjects): `prefix_<hex>`. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

/**
 * Resolves when `predicate()` holds, polling every few ms; rejects after `timeoutMs` with
 * `message`. For conditions with no event to wait on; prefer a latch when there is one.
 */
export async function waitFor(predicate: () => boolean, timeoutMs = 5_000, message = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${message}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

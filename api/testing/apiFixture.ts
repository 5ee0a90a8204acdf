/**
 * Test helper: the api on real components without the pipeline: a nats-server of the file's
 * own (core/testing/natsFixture), the simulated world and the demo accounts seeded in the
 * control plane, embedded ClickHouse (chdb) in a temporary directory with the schema, and the
 * uWebSockets.js server. History is empty: enough for everything but ingestion.
 *
 * ```ts
 * const fx = await startApiFixture(); // top level; registers its teardown with node:test `after`
 * const r = await fx.call('GET', '/towers', { as: 'viewer@acme' });
 * ```
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import type { NatsConnection } from '@nats-io/transport-node';
import { type ClickHouseHandle, migrate, openClickHouse } from '../../core/clickhouse/index.js';
import { ControlPlaneStore } from '../../core/controlPlane/index.js';
import { ensureStreams } from '../../core/nats/index.js';
import { withNats, type NatsFixture } from '../../core/testing/natsFixture.js';
import { DEMO_ACCOUNTS, seedDemoAccounts } from '../../fixtures/accounts.js';
import { seedWorld } from '../../fixtures/seed.js';
import { generateWorld, type World } from '../../fixtures/world.js';
import { startApiServer, type ApiServer, type ApiServerOptions } from '../server.js';

export const FIXTURE_PASSWORD = 'fixture-password-1';

export interface FixtureReply {
  status: number;
  headers: Headers;
  json: any;
  text: string;
}

/** One request to the api at `baseUrl`, its reply read whole (JSON parsed when it is JSON). */
export async function callApi(
  baseUrl: string,
  method: string,
  path: string,
  opts: { token?: string | null | undefined; body?: unknown; raw?: string; headers?: Record<string, string> } = {},
): Promise<FixtureReply> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers['authorization'] = `Bearer ${opts.token}`;
  const body = opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body));
  if (body !== undefined) headers['content-type'] ??= 'application/json';
  const r = await fetch(`${baseUrl}${path}`, { method, headers, ...(body === undefined ? {} : { body }) });
  const text = await r.text();
  let json: unknown;
  try {
    json = text === '' ? null : JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: r.status, headers: r.headers, json, text };
}

export interface ApiFixture {
  readonly nats: NatsFixture;
  readonly nc: NatsConnection;
  readonly store: ControlPlaneStore;
  readonly clickhouse: ClickHouseHandle;
  readonly world: World;
  /** The default server (generous rate limits). */
  readonly api: ApiServer;
  /** Access tokens of every demo account on `api`. */
  readonly tokens: Readonly<Record<string, string>>;
  /** Another server on the same components, with its own options (closed at teardown). */
  startServer(options?: Partial<ApiServerOptions>): Promise<ApiServer>;
  call(
    method: string,
    path: string,
    opts?: { as?: string; token?: string; body?: unknown; raw?: string; headers?: Record<string, string>; server?: ApiServer },
  ): Promise<FixtureReply>;
}

export async function startApiFixture(options: Partial<ApiServerOptions> = {}, fixture: { reconnect?: boolean } = {}): Promise<ApiFixture> {
  const nats = await withNats();
  // `reconnect`: the api's connection rides out a broker that goes away, as in production.
  const nc = await nats.connect('api-fixture', fixture.reconnect ? { maxReconnectAttempts: -1, reconnectTimeWait: 100 } : {});
  await ensureStreams(nc);
  const store = await ControlPlaneStore.open(nc);
  const world = generateWorld({ seed: 7, enterprises: 3, usersPerEnterprise: 6, towers: 4 });
  await seedWorld(store, world);
  await seedDemoAccounts(store, FIXTURE_PASSWORD);
  const dataDir = await mkdtemp(join(tmpdir(), 'tw-api-fixture-'));
  const clickhouse = await openClickHouse({ clickhouseUrl: null, dataDir });
  await migrate(clickhouse, { retentionDays: 30 });
  const servers: ApiServer[] = [];
  const log = (line: string): void => void process.stderr.write(`${line}\n`);
  const startServer = async (over: Partial<ApiServerOptions> = {}): Promise<ApiServer> => {
    const s = await startApiServer({
      nc,
      clickhouse,
      port: 0,
      jwtSecret: 'f'.repeat(48),
      checkResponses: true,
      log,
      limits: { perAccountPerMinute: 1_000_000, loginAttemptsPerAddress: 1_000_000 },
      ...options,
      ...over,
    });
    servers.push(s);
    return s;
  };
  after(async () => {
    for (const s of servers.reverse()) await s.close();
    await clickhouse.close();
    await rm(dataDir, { recursive: true, force: true });
  });
  const api = await startServer();
  const tokens: Record<string, string> = {};
  const call: ApiFixture['call'] = (method, path, opts = {}) =>
    callApi((opts.server ?? api).url, method, path, { ...opts, token: opts.token ?? (opts.as === undefined ? undefined : tokens[opts.as]) });
  for (const a of DEMO_ACCOUNTS) {
    const r = await call('POST', '/auth/login', { body: { username: a.username, password: FIXTURE_PASSWORD } });
    if (r.status !== 200) throw new Error(`fixture: cannot sign in ${a.username}: ${r.text}`);
    tokens[a.username] = r.json.access_token;
  }
  return { nats, nc, store, clickhouse, world, api, tokens, startServer, call };
}

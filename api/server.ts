/**
 * The api as one running thing: control-plane view and store, auth, rate limits, metrics,
 * every route, the OpenAPI document and the alert socket on one uWebSockets.js app. Used by
 * `towerwatch api` and `towerwatch up` (which hands it the ClickHouse handle the pipeline
 * opened: an embedded engine has one owner process).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { jetstream } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { ClickHouseHandle } from '../core/clickhouse/index.js';
import type { Config } from '../core/config.js';
import { ControlPlaneStore, ControlPlaneView } from '../core/controlPlane/index.js';
import { createAlertsSocket, type AlertsSocket } from './alertsSocket.js';
import { DecisionEngine } from './decisions.js';
import { PolicyPreviews } from './previews.js';
import { RecentIds } from './recentIds.js';
import { PolicyVersions } from './policyVersions.js';
import { loadDashboardPage } from './dashboardPage.js';
import { AuthService } from './auth.js';
import type { ApiContext, ApiRoute } from './context.js';
import { startHttpServer, type HttpServer } from './http.js';
import { RateLimits, type LimitOptions } from './limits.js';
import { ApiMetrics } from './metrics.js';
import { openApiDocument } from './openapi.js';
import { authRoutes } from './routes/auth.js';
import { dashboardRoutes } from './routes/dashboard.js';
import { decisionRoutes } from './routes/decisions.js';
import { deviceRoutes } from './routes/devices.js';
import { explainRoutes } from './routes/explain.js';
import { networkRoutes } from './routes/network.js';
import { opsRoutes } from './routes/ops.js';
import { policyRoutes } from './routes/policies.js';
import { policyVersionRoutes } from './routes/policyVersions.js';
import { previewRoutes } from './routes/previews.js';
import { blockRoutes } from './routes/blocks.js';
import { outputRoutes } from './routes/outputs.js';
import { remediationRoutes } from './routes/remediation.js';
import { roleRoutes } from './routes/roles.js';
import { shadowRoutes } from './routes/shadow.js';
import { requireAccess } from './tenancy.js';
import type { LogLine } from '../core/log.js';

export interface ApiServerOptions {
  nc: NatsConnection;
  clickhouse: ClickHouseHandle;
  port: number;
  host?: string;
  /** Token signing key; null: shared one kept in NATS KV. */
  jwtSecret: string | null;
  limits?: LimitOptions;
  /** Epoch ms (tests move it). @default Date.now */
  now?: () => number;
  accessTtlSeconds?: number;
  /** @default 2000 */
  metricsCacheMs?: number;
  /** @default 1000 (newer alerts reach the page over /ws/alerts meanwhile) */
  alertsCacheMs?: number;
  maxBackpressureBytes?: number;
  heartbeatEveryMs?: number;
  /** A request with no answer by then gets a 503 `timeout`. @default 30 s */
  requestTimeoutMs?: number;
  /** Validate replies against their documented schemas (tests). */
  checkResponses?: boolean;
  /** Bearer token `/metrics` requires; null or absent: loopback clients only. */
  metricsToken?: string | null;
  /** Least replicas of the KV buckets the api opens (raised, never lowered). @default 1 */
  natsReplicas?: number;
  /** Where `POST /decisions` caches compiled policy modules (the pipeline's `<data dir>/wasm-cache`). @default none */
  wasmCacheDir?: string;
  log: LogLine;
}

/** The options a deployment's configuration sets (port, address, token key and lifetime, rate limit, metrics token). */
export function apiOptionsFrom(
  config: Pick<Config, 'apiPort' | 'apiHost' | 'jwtSecret' | 'rateLimitPerMinute' | 'accessTtlSeconds' | 'metricsToken' | 'natsReplicas' | 'dataDir'>,
): Pick<ApiServerOptions, 'port' | 'host' | 'jwtSecret' | 'limits' | 'accessTtlSeconds' | 'metricsToken' | 'natsReplicas' | 'wasmCacheDir'> {
  return {
    wasmCacheDir: join(config.dataDir, 'wasm-cache'),
    port: config.apiPort,
    host: config.apiHost,
    jwtSecret: config.jwtSecret,
    limits: { perAccountPerMinute: config.rateLimitPerMinute },
    accessTtlSeconds: config.accessTtlSeconds,
    metricsToken: config.metricsToken,
    natsReplicas: config.natsReplicas,
  };
}

export interface ApiServer extends AsyncDisposable {
  readonly url: string;
  readonly port: number;
  readonly routes: readonly ApiRoute[];
  readonly alerts: AlertsSocket;
  readonly metrics: ApiMetrics;
  readonly view: ControlPlaneView;
  /** Stops listening, then closes the alerts socket, the auth watch and the view. Idempotent. */
  close(): Promise<void>;
}

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

/** How long a write's reply waits for this node's view to show it (the KV watch lags by milliseconds). */
const READ_YOUR_WRITES_MS = 2_000;

/** Alert ids each node remembers (repeats dropped, rows waited for): minutes of alerts at thousands a second, about 20 MB. */
const RECENT_ALERT_IDS = 262_144;

export async function startApiServer(options: ApiServerOptions): Promise<ApiServer> {
  const now = options.now ?? Date.now;
  const replicas = options.natsReplicas ?? 1;
  const view = await ControlPlaneView.open(options.nc, { replicas });
  const cleanups: Array<() => unknown> = [() => view.close()];
  try {
    // Read your writes: a write's reply waits until this node's view, which serves the reads, has it.
    const store = await ControlPlaneStore.open(options.nc, {
      replicas,
      afterWrite: async (revision) => {
        if (!(await view.waitForRevision(revision, READ_YOUR_WRITES_MS)))
          options.log(`api: control-plane revision ${revision} not in this node's view after ${READ_YOUR_WRITES_MS} ms; replying anyway`, 'warn');
      },
    });
    const auth = await AuthService.open({
      nc: options.nc,
      view,
      secret: options.jwtSecret,
      now,
      replicas,
      ...(options.accessTtlSeconds === undefined ? {} : { accessTtlSeconds: options.accessTtlSeconds }),
    });
    cleanups.push(() => auth.close());
    // Shared by every api node on this NATS (api/sharedLimit.ts).
    const limits = new RateLimits(options.limits, { nc: options.nc, replicas, log: options.log });
    const metrics = new ApiMetrics();
    const versions = await PolicyVersions.start(view, options.clickhouse, { log: options.log, now });
    cleanups.push(() => versions.close());
    const recentAlerts = new RecentIds(RECENT_ALERT_IDS);
    const ctx: ApiContext = {
      nc: options.nc,
      recentAlerts,
      js: jetstream(options.nc),
      view,
      store,
      clickhouse: options.clickhouse,
      auth,
      limits,
      versions,
      now,
      log: options.log,
      metricsCacheMs: options.metricsCacheMs ?? 2000,
      alertsCacheMs: options.alertsCacheMs ?? 1000,
    };
    const decisions = new DecisionEngine(view, { cacheDir: options.wasmCacheDir, log: options.log });
    cleanups.push(() => decisions.close());
    const previews = new PolicyPreviews(options.clickhouse, { cacheDir: options.wasmCacheDir, now, nc: options.nc, replicas, log: options.log });
    cleanups.push(() => previews.close());
    const routes: ApiRoute[] = [];
    const version = packageVersion();
    let openapi: unknown;
    routes.push(
      ...authRoutes(ctx),
      ...dashboardRoutes(ctx),
      ...deviceRoutes(ctx),
      ...policyRoutes(ctx),
      ...roleRoutes(ctx),
      ...networkRoutes(ctx),
      ...remediationRoutes(ctx),
      ...blockRoutes(ctx, { replicas }),
      ...outputRoutes(ctx, { replicas }),
      ...decisionRoutes(ctx, decisions),
      ...policyVersionRoutes(ctx),
      ...explainRoutes(ctx),
      ...previewRoutes(ctx, previews),
      ...shadowRoutes(ctx),
      ...opsRoutes(ctx, metrics, () => (openapi ??= openApiDocument(routes, version)), { metricsToken: options.metricsToken ?? null }),
    );
    const alerts = createAlertsSocket({
      nc: options.nc,
      recentAlerts,
      view,
      auth,
      metrics,
      log: options.log,
      ...(options.maxBackpressureBytes === undefined ? {} : { maxBackpressureBytes: options.maxBackpressureBytes }),
      ...(options.heartbeatEveryMs === undefined ? {} : { heartbeatEveryMs: options.heartbeatEveryMs }),
    });
    cleanups.push(() => alerts.close());
    const page = loadDashboardPage();
    if (!page.built) options.log('api: the dashboard page is not built (npm run build); / will say so');
    const http: HttpServer = await startHttpServer({
      routes,
      port: options.port,
      host: options.host ?? '127.0.0.1',
      log: options.log,
      checkResponses: options.checkResponses ?? false,
      ...(options.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: options.requestTimeoutMs }),
      authorize: async (route, head) => {
        const principal = await auth.authenticate(head.headers['authorization']);
        await limits.account(principal.account.username);
        requireAccess(principal, route.access);
        // A write checks what it names (a policy to assign, the revision to update) in this
        // node's view: first let the view take every write made before, on any node. Past the
        // bound the write goes on as before (a stale revision is still refused by the KV).
        if (route.access === 'write' && route.method !== 'get') await view.catchUp(READ_YOUR_WRITES_MS);
        return principal;
      },
      onReply: (route, status, seconds) => metrics.observeRequest(route.method === 'del' ? 'DELETE' : route.method.toUpperCase(), route.path, status, seconds),
      extend: (app) => {
        alerts.attach(app);
        page.attach(app, options.log);
      },
    });
    let closing: Promise<void> | undefined;
    const close = (): Promise<void> =>
      (closing ??= (async () => {
        http.close();
        for (const c of cleanups.reverse()) await c();
      })());
    return {
      url: http.url,
      port: http.port,
      routes,
      alerts,
      metrics,
      view,
      close,
      [Symbol.asyncDispose]: close,
    };
  } catch (err) {
    for (const c of cleanups.reverse()) await c();
    throw err;
  }
}

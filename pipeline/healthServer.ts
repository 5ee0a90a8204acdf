/**
 * The pipeline service's own small HTTP server (node:http; the pipeline does not import the
 * api): `GET /healthz` (liveness), `GET /readyz` (NATS connected, workers ready, loop running,
 * ClickHouse answering) and `GET /metrics` (Prometheus text, {@link PipelineMetrics}).
 *
 * `/metrics` is guarded like the api's: with a token configured it needs
 * `Authorization: Bearer <token>` (401 otherwise); without one it answers loopback clients
 * only (403 otherwise). Errors use the api's envelope `{ "error": { "code", "message", "details" } }`.
 * Nothing a request sends can throw out of a handler: a failing one answers 500 and is logged.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ClickHouseHandle } from '../core/clickhouse/index.js';
import { bearerMatches, isLoopbackAddress } from '../core/metricsAccess.js';
import type { Pipeline } from './pipeline.js';
import type { NatsConnectionWatch } from '../core/nats/index.js';
import type { PipelineMetrics } from './pipelineMetrics.js';
import type { LogLine } from '../core/log.js';

/** How long a ClickHouse readiness answer is reused. */
export const CLICKHOUSE_CHECK_CACHE_MS = 3_000;
/** How long the ClickHouse readiness query may take before it counts as failed. */
export const CLICKHOUSE_CHECK_TIMEOUT_MS = 2_000;

export type ReadinessCheck = 'nats' | 'clickhouse' | 'workers' | 'loop';

export interface Readiness {
  ready: boolean;
  checks: Record<ReadinessCheck, boolean>;
  /** Why each failed check failed. */
  reasons: Partial<Record<ReadinessCheck, string>>;
}

/** What readiness looks at; given once the service has started them. */
export interface ReadinessSources {
  pipeline: Pick<Pipeline, 'ready' | 'closed' | 'workerThreads'>;
  nats: Pick<NatsConnectionWatch, 'isConnected'>;
  clickhouse: Pick<ClickHouseHandle, 'client'>;
}

export interface HealthServerOptions {
  /** 0: a free port. */
  port: number;
  host: string;
  /** Bearer token for /metrics; null: loopback clients only. */
  metricsToken: string | null;
  metrics: PipelineMetrics;
  log: LogLine;
  clickhouseCacheMs?: number;
  clickhouseTimeoutMs?: number;
}

export class HealthServerListenError extends Error {
  constructor(
    readonly host: string,
    readonly port: number,
    readonly code: string | undefined,
    cause: unknown,
  ) {
    super(`cannot listen on ${host}:${port}${code === 'EADDRINUSE' ? ' (address in use)' : code ? ` (${code})` : ''}`, { cause });
    this.name = 'HealthServerListenError';
  }
}

interface ErrorEnvelope {
  error: { code: string; message: string; details: unknown };
}

const envelope = (code: string, message: string, details: unknown = null): ErrorEnvelope => ({ error: { code, message, details } });

const ROUTES = new Set(['/healthz', '/readyz', '/metrics']);

export class HealthServer implements AsyncDisposable {
  readonly #server: Server;
  readonly #o: HealthServerOptions;
  readonly #closed: Promise<void>;
  #closing: Promise<void> | null = null;
  #sources: ReadinessSources | null = null;
  #workersReady = false;
  #workersError: string | null = null;
  #loopEnded: string | null = null;
  #loopFailed = false;
  #ch: { at: number; ok: boolean; reason: string | null } | null = null;
  #chInFlight: Promise<{ ok: boolean; reason: string | null }> | null = null;
  /** The address bound (port 0 resolved). */
  readonly host: string;
  readonly port: number;

  private constructor(server: Server, options: HealthServerOptions, port: number) {
    this.#server = server;
    this.#o = options;
    this.host = options.host;
    this.port = port;
    this.#closed = new Promise((resolve) => server.once('close', () => resolve()));
  }

  /** Binds and serves; /readyz answers 503 until {@link attach}. @throws {HealthServerListenError} */
  static async start(options: HealthServerOptions): Promise<HealthServer> {
    let onRequest: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => void res.destroy();
    const server = createServer((req, res) => onRequest(req, res));
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => reject(new HealthServerListenError(options.host, options.port, err.code, err));
      server.once('error', onError);
      server.listen(options.port, options.host, () => {
        server.off('error', onError);
        resolve();
      });
    });
    // Later server errors (rare: EMFILE on accept) are logged, never thrown.
    server.on('error', (err) => options.log(`pipeline: health server error: ${err.message}`, 'warn'));
    const self = new HealthServer(server, options, (server.address() as AddressInfo).port);
    onRequest = (req, res) => self.#onRequest(req, res);
    return self;
  }

  get url(): string {
    const h = this.host.includes(':') ? `[${this.host}]` : this.host;
    return `http://${h}:${this.port}`;
  }

  /** What readiness checks, once the service has it running. */
  attach(sources: ReadinessSources): void {
    this.#sources = sources;
    sources.pipeline.ready().then(
      () => (this.#workersReady = true),
      (err: unknown) => (this.#workersError = `workers failed to start: ${errorText(err)}`),
    );
    sources.pipeline.closed().then(
      () => (this.#loopEnded = 'the pipeline loop has stopped'),
      (err: unknown) => {
        this.#loopFailed = true;
        this.#loopEnded = `the pipeline loop failed: ${errorText(err)}`;
      },
    );
  }

  async readiness(): Promise<Readiness> {
    const s = this.#sources;
    const reasons: Partial<Record<ReadinessCheck, string>> = {};
    if (s === null) {
      const starting = 'the pipeline is starting';
      return {
        ready: false,
        checks: { nats: false, clickhouse: false, workers: false, loop: false },
        reasons: { nats: starting, clickhouse: starting, workers: starting, loop: starting },
      };
    }
    const nats = s.nats.isConnected();
    if (!nats) reasons.nats = 'not connected to NATS';
    const workers = this.#workersReady && this.#workersError === null && s.pipeline.workerThreads().length > 0;
    if (!workers)
      reasons.workers = this.#workersError ?? (this.#workersReady ? 'no worker thread alive' : 'workers are loading the control plane and policies');
    const loop = this.#loopEnded === null;
    if (!loop) reasons.loop = this.#loopEnded ?? '';
    const ch = await this.#clickhouse(s);
    if (!ch.ok) reasons.clickhouse = ch.reason ?? 'ClickHouse did not answer';
    const checks = { nats, clickhouse: ch.ok, workers, loop };
    return { ready: nats && ch.ok && workers && loop, checks, reasons };
  }

  /** `SELECT 1`, its answer reused for a few seconds; one query at a time. */
  #clickhouse(s: ReadinessSources): Promise<{ ok: boolean; reason: string | null }> {
    const cacheMs = this.#o.clickhouseCacheMs ?? CLICKHOUSE_CHECK_CACHE_MS;
    if (this.#ch && Date.now() - this.#ch.at < cacheMs) return Promise.resolve(this.#ch);
    this.#chInFlight ??= (async () => {
      const timeoutMs = this.#o.clickhouseTimeoutMs ?? CLICKHOUSE_CHECK_TIMEOUT_MS;
      const abort = new AbortController();
      let timer: NodeJS.Timeout | undefined;
      let result: { ok: boolean; reason: string | null };
      try {
        const query = (async () => {
          const rs = await s.clickhouse.client.query({ query: 'SELECT 1 AS ok', format: 'JSONEachRow', abort_signal: abort.signal });
          const rows = await rs.json<{ ok: number }>();
          if (Number(rows[0]?.ok) !== 1) throw new Error('unexpected answer to SELECT 1');
        })();
        query.catch(() => undefined);
        await Promise.race([
          query,
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => {
              abort.abort();
              reject(new Error(`no answer within ${timeoutMs} ms`));
            }, timeoutMs);
          }),
        ]);
        result = { ok: true, reason: null };
      } catch (err) {
        result = { ok: false, reason: `ClickHouse: ${errorText(err)}` };
      } finally {
        clearTimeout(timer);
      }
      this.#ch = { at: Date.now(), ...result };
      return result;
    })().finally(() => (this.#chInFlight = null));
    return this.#chInFlight;
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    this.#route(req, res, path).catch((err: unknown) => {
      this.#o.log(
        `pipeline: health server: ${req.method ?? '?'} ${path.slice(0, 200)} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
      );
      try {
        if (!res.headersSent) sendJson(res, 500, envelope('internal', 'internal error; see the pipeline log'));
        else res.destroy();
      } catch {
        res.destroy();
      }
    });
  }

  async #route(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    if (!ROUTES.has(path)) {
      sendJson(res, 404, envelope('not_found', 'no such path', { paths: [...ROUTES] }));
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendJson(res, 405, envelope('method_not_allowed', `${path} answers GET and HEAD only`, { allowed: ['GET', 'HEAD'] }), { allow: 'GET, HEAD' });
      return;
    }
    if (path === '/healthz') {
      // Liveness: this answer means the event loop turns; a pipeline loop that failed for good
      // is worth a restart.
      if (this.#loopFailed) sendJson(res, 503, { status: 'failed', reason: this.#loopEnded });
      else sendJson(res, 200, { status: 'ok' });
      return;
    }
    if (path === '/readyz') {
      const r = await this.readiness();
      if (r.ready) sendJson(res, 200, { status: 'ready', checks: r.checks });
      else sendJson(res, 503, { status: 'not_ready', checks: r.checks, reasons: r.reasons });
      return;
    }
    // /metrics
    const token = this.#o.metricsToken;
    if (token !== null) {
      if (!bearerMatches(req.headers.authorization, token)) {
        sendJson(res, 401, envelope('unauthorized', 'metrics need Authorization: Bearer <TOWERWATCH_METRICS_TOKEN>'), {
          'www-authenticate': 'Bearer realm="towerwatch-pipeline"',
        });
        return;
      }
    } else if (!isLoopbackAddress(req.socket.remoteAddress)) {
      sendJson(res, 403, envelope('forbidden', 'metrics are served to loopback clients only while TOWERWATCH_METRICS_TOKEN is unset'));
      return;
    }
    const { body, contentType } = await this.#o.metrics.render();
    res.writeHead(200, { 'content-type': contentType, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }

  /** Stops accepting, ends open connections. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
    return this.#closing;
  }

  /** Resolves once the server has closed. */
  closed(): Promise<void> {
    return this.#closed;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * The api's HTTP layer on uWebSockets.js: routes declared as data (method, path with `{params}`,
 * zod schemas for query and body), every reply JSON, every failure the error envelope of
 * errors.ts. uWS specifics kept here: the request object is valid only until the handler's
 * first await (so everything is read up front), writes after an await are corked, and nothing
 * is written once the client aborted.
 */
import { createHash } from 'node:crypto';
import type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket } from 'uWebSockets.js';
import { type z } from 'zod';
import { DEFAULT_BODY_LIMIT_BYTES, parseJson, readBody } from './body.js';
import { isTransientNatsError } from '../core/nats/index.js';
import { RetryBudgetExhaustedError } from '../core/retry.js';
import { ApiError, statusLine } from './errors.js';
import { loadUws } from './uws.js';
import type { LogLine } from '../core/log.js';

export type Method = 'get' | 'post' | 'put' | 'patch' | 'del';

export interface RequestContext<Q, B, P = unknown> {
  /** Who is asking, as `authorize` found; null on public routes. */
  readonly principal: P;
  readonly method: string;
  readonly path: string;
  readonly params: Readonly<Record<string, string>>;
  readonly query: Q;
  readonly body: B;
  /** Lower-cased header names. */
  readonly headers: Readonly<Record<string, string>>;
  readonly remoteAddress: string;
}

export interface Reply {
  status?: number;
  body?: unknown;
  /** A reply that is not JSON (Prometheus text): sent as it is with `contentType`. */
  text?: { body: string; contentType: string };
  headers?: Readonly<Record<string, string>>;
}

/** Who may call a route: anyone, or an authenticated account with this permission. */
export type Access = 'public' | 'read' | 'history' | 'write';

export interface Route<Q, B, P> {
  method: Method;
  /** e.g. `/roles/{role_id}/policies/{policy_id}` */
  path: string;
  summary: string;
  /** OpenAPI tag. */
  tag: string;
  access: Access;
  query?: z.ZodType<Q>;
  body?: z.ZodType<B>;
  /** Shape of a successful reply body: documented in OpenAPI, checked in tests. */
  response?: z.ZodType;
  /** Status of a successful reply. @default 200 */
  successStatus?: number;
  /** Largest request body this route reads (a batch endpoint's is larger). @default the server's */
  bodyLimitBytes?: number;
  /** How long this route may take before the 503 `timeout` (one that waits on purpose needs more). @default the server's */
  timeoutMs?: number;
  /**
   * GET replies that depend only on what this key names (e.g. the control-plane view's version
   * and the caller's scope) are kept, serialized with their ETag, and served without running
   * the handler again. Return null to skip the cache.
   */
  cacheKey?: (ctx: RequestContext<Q, B, P>) => string | null;
  handler: (ctx: RequestContext<Q, B, P>) => Reply | Promise<Reply>;
}

/**
 * A route as a table of routes holds it: its query and body types erased, and its handler given
 * a principal of type P, or null on a public route. Made by the constructor of {@link routeFor}.
 */
export type AnyRoute<P> = Route<unknown, unknown, P | null>;

/**
 * The route constructor for handlers given principals of type P: it types a handler's query and
 * body as its route's schemas parse them, and its principal as null on a public route, then
 * erases them for the table. Sound because startHttpServer gives a handler only what its own
 * route's schemas parsed, and a principal only on a route that is not public.
 */
export function routeFor<P>(): <Q = undefined, B = undefined, A extends Access = Access>(
  route: Route<Q, B, A extends 'public' ? null : P> & { access: A },
) => AnyRoute<P> {
  return (route) => route as unknown as AnyRoute<P>;
}

/** What the HTTP layer knows of a request before its body is read. */
export interface RequestHead {
  readonly method: string;
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly remoteAddress: string;
}

export interface HttpServerOptions<P> {
  routes: readonly AnyRoute<P>[];
  /** @default 0 (a free port) */
  port?: number;
  /** @default '127.0.0.1' */
  host?: string;
  /** @default 64 KiB */
  bodyLimitBytes?: number;
  log?: LogLine;
  /** Finds the principal of a non-public route, or throws an ApiError (401, 403, 429). */
  authorize?: (route: AnyRoute<P>, head: RequestHead) => P | Promise<P>;
  /** Called once per reply, for metrics. */
  onReply?: (route: AnyRoute<P>, status: number, seconds: number) => void;
  /** Validate every successful reply against the route's `response` schema (tests). */
  checkResponses?: boolean;
  /** Registers more handlers (the WebSocket) before the catch-all 404. */
  extend?: (app: TemplatedApp) => void;
  /**
   * A request with no answer by then gets a 503 `timeout` (and a warning in the log naming its
   * route), whatever its handler still waits for. @default 30 s
   */
  requestTimeoutMs?: number;
}

export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

export interface HttpServer {
  readonly app: TemplatedApp;
  readonly port: number;
  readonly url: string;
  close(): void;
}

interface Issue {
  readonly code: string;
  readonly path: readonly PropertyKey[];
  readonly message: string;
  readonly errors?: readonly (readonly Issue[])[];
}

/**
 * A union's failure as the issues of the branch that came closest (fewest issues), not
 * "Invalid input": `{requests: [1,001 items]}` is told its array is too long, not that it is
 * no single request either.
 */
function closestIssues(issues: readonly Issue[]): Issue[] {
  return issues.flatMap((i) => {
    const branches = i.code === 'invalid_union' ? (i.errors ?? []).filter((b) => b.length > 0) : [];
    if (branches.length === 0) return [i];
    const closest = branches.reduce((a, b) => (b.length < a.length ? b : a));
    return closestIssues(closest).map((b) => ({ ...b, path: [...i.path, ...b.path] }));
  });
}

/** zod issues as the envelope's details: where and what. */
export function validationError(where: 'query' | 'body', error: z.ZodError): ApiError {
  const details = closestIssues(error.issues as readonly Issue[]).map((i) => ({
    path: [where, ...i.path.map(String)].join('.'),
    message: i.message,
    code: i.code,
  }));
  return new ApiError(400, 'validation_failed', `invalid ${where}: ${details.map((d) => `${d.path}: ${d.message}`).join('; ')}`, details);
}

function parse<T>(schema: z.ZodType<T> | undefined, value: unknown, where: 'query' | 'body'): T {
  if (schema === undefined) {
    if (where === 'body' && value !== undefined) throw new ApiError(400, 'unexpected_body', 'this endpoint takes no request body');
    return undefined as T;
  }
  const r = schema.safeParse(value);
  if (!r.success) throw validationError(where, r.error);
  return r.data;
}

function send(res: HttpResponse, aborted: { value: boolean }, status: number, body: unknown, headers: Readonly<Record<string, string>> = {}): void {
  sendRaw(res, aborted, status, status === 204 || status === 304 ? null : JSON.stringify(body), headers);
}

function sendRaw(res: HttpResponse, aborted: { value: boolean }, status: number, json: string | null, headers: Readonly<Record<string, string>>): void {
  if (aborted.value) return;
  res.cork(() => {
    res.writeStatus(statusLine(status));
    for (const [k, v] of Object.entries(headers)) res.writeHeader(k, v);
    if (json === null) res.endWithoutBody();
    else res.writeHeader('content-type', 'application/json').end(json);
  });
}

/** A GET reply as sent: its JSON, its ETag, the handler's headers. */
interface CachedReply {
  readonly text: string;
  readonly etag: string;
  readonly headers: Readonly<Record<string, string>>;
}

/** A 200 GET reply, or a 304 when If-None-Match names its ETag. @returns the status sent */
function sendConditional(res: HttpResponse, aborted: { value: boolean }, ifNoneMatch: string | undefined, reply: CachedReply): number {
  const headers = { 'cache-control': 'private, no-cache', ...reply.headers, etag: reply.etag };
  const status = etagMatches(ifNoneMatch, reply.etag) ? 304 : 200;
  sendRaw(res, aborted, status, status === 304 ? null : reply.text, headers);
  return status;
}

/** A weak validator of a JSON reply: same bytes, same tag. */
export function etagOf(json: string): string {
  return `W/"${createHash('sha1').update(json).digest('base64url').slice(0, 22)}"`;
}

/** Whether an If-None-Match header names `etag` (weak comparison, `*` matches). */
export function etagMatches(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  const bare = (t: string): string => t.trim().replace(/^W\//, '');
  return header.split(',').some((t) => t.trim() === '*' || bare(t) === bare(etag));
}

export function sendError(res: HttpResponse, aborted: { value: boolean }, err: unknown, log: LogLine, what: string): number {
  if (!(err instanceof ApiError) && (isTransientNatsError(err) || err instanceof RetryBudgetExhaustedError)) {
    // The broker is away (a restart, a leader election): say so, and when to try again.
    log(`api: ${what}: 503, NATS unavailable: ${(err as Error).message}`);
    err = new ApiError(
      503,
      'unavailable',
      'the message broker is not reachable right now; try again shortly',
      { retry_after_seconds: 2 },
      { 'Retry-After': '2' },
    );
  }
  if (err instanceof ApiError) {
    send(res, aborted, err.status, err.body(), err.headers);
    return err.status;
  }
  log(`api: ${what} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`, 'error');
  send(res, aborted, 500, new ApiError(500, 'internal', 'internal error; the server log has the details').body());
  return 500;
}

/**
 * The most a request's head (request line and headers) may take. uWebSockets.js v20.30 keeps at
 * most 4 KiB of a head that arrives in more than one read and closes the connection beyond it,
 * with no reply (this build ignores UWS_HTTP_MAX_HEADERS_SIZE); a head that arrives whole is
 * parsed at any size. Refusing the same size with a 431 here makes the limit one limit.
 */
export const MAX_HEADER_BYTES = 4096;

/** Bytes of a request's head as sent (near enough: request line and `name: value\r\n` lines). */
export function headBytes(req: HttpRequest): number {
  let n = req.getCaseSensitiveMethod().length + req.getUrl().length + (req.getQuery()?.length ?? 0) + 12;
  req.forEach((k, v) => (n += k.length + v.length + 4));
  return n;
}

export const headersTooLarge = (bytes: number): ApiError =>
  new ApiError(431, 'headers_too_large', `the request's headers take ${bytes} bytes; at most ${MAX_HEADER_BYTES} are accepted`, {
    limit_bytes: MAX_HEADER_BYTES,
    bytes,
  });

/**
 * Answers a request no route takes with `error`, or 431 for a head over the limit. A HEAD reply
 * has no body: uWS would send one, and the client would read it as the start of its next reply.
 */
function refuse(res: HttpResponse, req: HttpRequest, error: ApiError, headers: Readonly<Record<string, string>> = {}): void {
  const bytes = headBytes(req);
  const e = bytes > MAX_HEADER_BYTES ? headersTooLarge(bytes) : error;
  sendRaw(res, { value: false }, e.status, req.getMethod() === 'head' ? null : JSON.stringify(e.body()), headers);
}

/** A percent-decoded path parameter. @throws {ApiError} 400 `bad_path` for broken percent-encoding */
export function decodePathParam(name: string, raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new ApiError(400, 'bad_path', `path parameter ${name} is not valid percent-encoding`, { parameter: name });
  }
}

/**
 * Runs a uWS handler's synchronous part so that nothing it throws escapes into uWS (which would
 * end the process): an ApiError is answered as such, anything else is logged and answered 500.
 */
export function guarded(res: HttpResponse, log: LogLine, what: string, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    try {
      sendError(res, { value: false }, err, log, what);
    } catch (sendErr) {
      // The response was already ended or aborted: nothing more can be said to this client.
      log(`api: ${what}: could not answer: ${sendErr instanceof Error ? sendErr.message : String(sendErr)}`, 'warn');
    }
  }
}

/** Query string to an object; a repeated parameter becomes an array. */
function queryObject(raw: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of new URLSearchParams(raw)) {
    const prev = out[k];
    out[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  return out;
}

/** `{name}` segments to uWS's `:name`, and the names in order. */
function compilePath(path: string): { pattern: string; names: string[] } {
  const names: string[] = [];
  const pattern = path.replace(/\{([a-z_][a-z0-9_]*)\}/gi, (_m, name: string) => {
    names.push(name);
    return `:${name}`;
  });
  return { pattern, names };
}

const METHOD_NAME: Readonly<Record<Method, string>> = { get: 'GET', post: 'POST', put: 'PUT', patch: 'PATCH', del: 'DELETE' };

const REPLY_CACHE_SIZE = 2000;
/** uSockets' ListenOptions.LIBUS_LISTEN_EXCLUSIVE_PORT (a const enum in the typings). */
const LIBUS_LISTEN_EXCLUSIVE_PORT = 1;
const READ_HEADERS = ['authorization', 'if-none-match', 'if-match', 'content-type', 'user-agent', 'x-forwarded-for'] as const;

/** Starts listening. @throws {Error} when the port cannot be bound. */
export async function startHttpServer<P>(options: HttpServerOptions<P>): Promise<HttpServer> {
  const uws = loadUws();
  const log = options.log ?? (() => undefined);
  const limit = options.bodyLimitBytes ?? DEFAULT_BODY_LIMIT_BYTES;
  const timeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) throw new RangeError(`requestTimeoutMs must be a positive number of milliseconds, got ${timeoutMs}`);
  const app = uws.App();
  const methodsByPattern = new Map<string, string[]>();
  const replyCache = new Map<string, CachedReply>();

  for (const route of options.routes) {
    const { pattern, names } = compilePath(route.path);
    methodsByPattern.set(pattern, [...(methodsByPattern.get(pattern) ?? []), METHOD_NAME[route.method]]);
    app[route.method](pattern, (res: HttpResponse, req: HttpRequest) => {
      const method = METHOD_NAME[route.method];
      // Nothing thrown here may reach uWS: it would end the process.
      guarded(res, log, `${method} ${route.path}`, () => handle(route, names, method, res, req));
    });
  }
  /** One request of a route; the synchronous part reads req, the rest runs after it is gone. */
  function handle(route: AnyRoute<P>, names: readonly string[], method: string, res: HttpResponse, req: HttpRequest): void {
    const aborted = { value: false };
    // Everything from req now: it is gone after the first await. Path parameters are decoded
    // below, inside the try: broken percent-encoding is the client's error (400), not a crash.
    const rawParams = names.map((_n, i) => req.getParameter(i) ?? '');
    const bytes = headBytes(req);
    // The headers routes use, one native call each (cheaper than visiting every header).
    const headers: Record<string, string> = {};
    for (const h of READ_HEADERS) {
      const v = req.getHeader(h);
      if (v !== '') headers[h] = v;
    }
    const path = req.getUrl();
    const rawQuery = req.getQuery() ?? '';
    let address: string | undefined;
    const head = {
      get remoteAddress(): string {
        // Read on demand (sign-in, /metrics); res is valid until it ends or aborts.
        address ??= aborted.value ? '' : Buffer.from(res.getRemoteAddressAsText()).toString();
        return address;
      },
    };
    let body: Promise<Buffer> | null;
    if (route.method === 'get' || route.method === 'del') {
      res.onAborted(() => (aborted.value = true));
      body = null;
    } else {
      body = readBody(res, route.bodyLimitBytes ?? limit, aborted);
      // Refused before the body was read: its rejection is not waited for.
      body.catch(() => undefined);
    }
    const started = performance.now();
    let timedOut = false;
    const routeTimeoutMs = route.timeoutMs ?? timeoutMs;
    const deadline = setTimeout(() => {
      if (aborted.value) return;
      timedOut = true;
      const seconds = routeTimeoutMs / 1000;
      log(`api: ${method} ${route.path}: no answer after ${seconds} s; answered 503 timeout`, 'warn');
      const err = new ApiError(
        503,
        'timeout',
        `the server took longer than ${seconds} s to answer; try again shortly`,
        { timeout_seconds: seconds },
        { 'Retry-After': '2' },
      );
      sendError(res, aborted, err, log, `${method} ${route.path}`);
      // The handler may still finish: it must not write to this response again.
      aborted.value = true;
      options.onReply?.(route, 503, seconds);
    }, routeTimeoutMs);
    void (async () => {
      let status: number;
      try {
        if (bytes > MAX_HEADER_BYTES) throw headersTooLarge(bytes);
        const params: Record<string, string> = {};
        names.forEach((n, i) => (params[n] = decodePathParam(n, rawParams[i] ?? '')));
        const principal =
          route.access === 'public' || options.authorize === undefined
            ? null
            : await options.authorize(route, {
                method,
                path,
                headers,
                get remoteAddress() {
                  return head.remoteAddress;
                },
              });
        const query = parse(route.query, rawQuery === '' ? {} : queryObject(rawQuery), 'query');
        const parsedBody = body === null ? parse(route.body, undefined, 'body') : parse(route.body, parseJson(await body), 'body');
        const ctx = {
          principal,
          method,
          path,
          params,
          query,
          body: parsedBody,
          headers,
          get remoteAddress() {
            return head.remoteAddress;
          },
        };
        const key = route.cacheKey?.(ctx) ?? null;
        const cacheId = key === null ? null : `${route.path}|${key}`;
        const cached = cacheId === null ? undefined : replyCache.get(cacheId);
        if (cached !== undefined) {
          status = sendConditional(res, aborted, headers['if-none-match'], cached);
        } else {
          const reply = await route.handler(ctx);
          status = reply.status ?? route.successStatus ?? 200;
          if (options.checkResponses && route.response !== undefined && status < 300) {
            const checked = route.response.safeParse(reply.body);
            if (!checked.success) throw new Error(`reply of ${method} ${route.path} does not match its documented schema: ${checked.error.message}`);
          }
          if (reply.text !== undefined) {
            const { body: textBody, contentType } = reply.text;
            const extra = reply.headers ?? {};
            if (!aborted.value)
              res.cork(() => {
                res.writeStatus(statusLine(status));
                for (const [k, v] of Object.entries(extra)) res.writeHeader(k, v);
                res.writeHeader('content-type', contentType).end(textBody);
              });
          } else {
            const text = status === 204 ? null : JSON.stringify(reply.body ?? null);
            if (route.method === 'get' && status === 200 && text !== null) {
              const entry: CachedReply = { text, etag: reply.headers?.['etag'] ?? etagOf(text), headers: reply.headers ?? {} };
              if (cacheId !== null) {
                if (replyCache.size >= REPLY_CACHE_SIZE) replyCache.delete(replyCache.keys().next().value!);
                replyCache.set(cacheId, entry);
              }
              status = sendConditional(res, aborted, headers['if-none-match'], entry);
            } else sendRaw(res, aborted, status, text, reply.headers ?? {});
          }
        }
      } catch (err) {
        // A body still streaming in after an early error is dropped with the connection's request.
        status = sendError(res, aborted, err, log, `${method} ${route.path}`);
      } finally {
        clearTimeout(deadline);
      }
      if (!timedOut) options.onReply?.(route, status, (performance.now() - started) / 1000);
    })().catch((err: unknown) => {
      // Only a failure to answer (the reply could not be written) or of onReply lands here.
      log(`api: ${method} ${route.path}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    });
  }
  for (const [pattern, methods] of methodsByPattern) {
    app.any(pattern, (res: HttpResponse, req: HttpRequest) =>
      guarded(res, log, 'method not allowed', () =>
        refuse(res, req, new ApiError(405, 'method_not_allowed', `${req.getCaseSensitiveMethod()} is not allowed here`, { allowed: methods }), {
          allow: methods.join(', '),
        }),
      ),
    );
  }
  options.extend?.(app);
  app.any('/*', (res: HttpResponse, req: HttpRequest) =>
    // Echo a bounded path: it may be long, and it is the client's own text.
    guarded(res, log, 'no route', () =>
      refuse(res, req, new ApiError(404, 'not_found', `no route for ${req.getCaseSensitiveMethod()} ${req.getUrl().slice(0, 200)}`)),
    ),
  );

  const host = options.host ?? '127.0.0.1';
  const socket = await new Promise<us_listen_socket>((resolve, reject) => {
    // Exclusive: by default uSockets sets SO_REUSEPORT, and a second process on the same port
    // would silently take half the connections (a second `up` with another token key, say).
    const listen = app.listen as unknown as (h: string, p: number, o: number, cb: (s: us_listen_socket | false) => void) => void;
    listen.call(app, host, options.port ?? 0, LIBUS_LISTEN_EXCLUSIVE_PORT, (s) =>
      s === false ? reject(new Error(`cannot listen on ${host}:${options.port ?? 0} (port taken?)`)) : resolve(s),
    );
  });
  const port = uws.us_socket_local_port(socket);
  return {
    app,
    port,
    url: `http://${host}:${port}`,
    close: () => {
      uws.us_listen_socket_close(socket);
    },
  };
}

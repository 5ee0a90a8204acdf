/**
 * The api's HTTP layer on uWebSockets.js: routes declared as data (method, path with `{params}`,
 * zod schemas for query and body), every reply JSON, every failure the error envelope of
 * errors.ts. uWS specifics kept here: the request object is valid only until the handler's
 * first await (so everything is read up front), writes after an await are corked, and nothing
 * is written once the client aborted.
 */
import type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket } from 'uWebSockets.js';
import { z } from 'zod';
import { DEFAULT_BODY_LIMIT_BYTES, parseJson, readBody } from './body.js';
import { ApiError, statusLine } from './errors.js';
import { loadUws } from './uws.js';

export type Method = 'get' | 'post' | 'put' | 'patch' | 'del';

export interface RequestContext<Q, B> {
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
  headers?: Readonly<Record<string, string>>;
}

export interface Route<Q = unknown, B = unknown> {
  method: Method;
  /** e.g. `/roles/{role_id}/policies/{policy_id}` */
  path: string;
  summary: string;
  query?: z.ZodType<Q>;
  body?: z.ZodType<B>;
  handler: (ctx: RequestContext<Q, B>) => Reply | Promise<Reply>;
}

export interface HttpServerOptions {
  // Each route's own Q and B are checked where it is declared; the table holds them all.
  routes: readonly Route<any, any>[];
  /** @default 0 (a free port) */
  port?: number;
  /** @default '127.0.0.1' */
  host?: string;
  /** @default 64 KiB */
  bodyLimitBytes?: number;
  log?: (line: string) => void;
}

export interface HttpServer {
  readonly app: TemplatedApp;
  readonly port: number;
  readonly url: string;
  close(): void;
}

/** zod issues as the envelope's details: where and what. */
export function validationError(where: 'query' | 'body', error: z.ZodError): ApiError {
  const details = error.issues.map((i) => ({ path: [where, ...i.path.map(String)].join('.'), message: i.message, code: i.code }));
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
  if (aborted.value) return;
  res.cork(() => {
    res.writeStatus(statusLine(status));
    for (const [k, v] of Object.entries(headers)) res.writeHeader(k, v);
    if (status === 204 || status === 304) res.endWithoutBody();
    else res.writeHeader('content-type', 'application/json').end(JSON.stringify(body));
  });
}

function sendError(res: HttpResponse, aborted: { value: boolean }, err: unknown, log: (line: string) => void, what: string): void {
  if (err instanceof ApiError) return send(res, aborted, err.status, err.body(), err.headers);
  log(`api: ${what} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  send(res, aborted, 500, new ApiError(500, 'internal', 'internal error; the server log has the details').body());
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

/** Starts listening. @throws {Error} when the port cannot be bound. */
export async function startHttpServer(options: HttpServerOptions): Promise<HttpServer> {
  const uws = loadUws();
  const log = options.log ?? (() => undefined);
  const limit = options.bodyLimitBytes ?? DEFAULT_BODY_LIMIT_BYTES;
  const app = uws.App();
  const methodsByPattern = new Map<string, string[]>();

  for (const route of options.routes) {
    const { pattern, names } = compilePath(route.path);
    methodsByPattern.set(pattern, [...(methodsByPattern.get(pattern) ?? []), METHOD_NAME[route.method]]);
    app[route.method](pattern, (res: HttpResponse, req: HttpRequest) => {
      const aborted = { value: false };
      // Everything from req now: it is gone after the first await.
      const params: Record<string, string> = {};
      names.forEach((n, i) => (params[n] = decodeURIComponent(req.getParameter(i) ?? '')));
      const headers: Record<string, string> = {};
      req.forEach((k, v) => (headers[k] = v));
      const path = req.getUrl();
      const rawQuery = req.getQuery() ?? '';
      const remoteAddress = Buffer.from(res.getRemoteAddressAsText()).toString();
      let body: Promise<Buffer>;
      if (route.method === 'get' || route.method === 'del') {
        res.onAborted(() => (aborted.value = true));
        body = Promise.resolve(Buffer.alloc(0));
      } else {
        body = readBody(res, limit, aborted);
      }
      void (async () => {
        try {
          const query = parse(route.query, Object.fromEntries(new URLSearchParams(rawQuery)), 'query');
          const raw = await body;
          const json = parseJson(raw);
          const parsedBody = parse(route.body, json, 'body');
          const reply = await route.handler({ method: METHOD_NAME[route.method], path, params, query, body: parsedBody, headers, remoteAddress });
          send(res, aborted, reply.status ?? 200, reply.body ?? null, reply.headers);
        } catch (err) {
          // A body still streaming in after an early error is dropped with the connection's request.
          sendError(res, aborted, err, log, `${METHOD_NAME[route.method]} ${route.path}`);
        }
      })();
    });
  }
  for (const [pattern, methods] of methodsByPattern) {
    app.any(pattern, (res: HttpResponse, req: HttpRequest) => {
      const method = req.getCaseSensitiveMethod();
      send(res, { value: false }, 405, new ApiError(405, 'method_not_allowed', `${method} is not allowed here`, { allowed: methods }).body(), { allow: methods.join(', ') });
    });
  }
  app.any('/*', (res: HttpResponse, req: HttpRequest) => {
    send(res, { value: false }, 404, new ApiError(404, 'not_found', `no route for ${req.getCaseSensitiveMethod()} ${req.getUrl()}`).body());
  });

  const host = options.host ?? '127.0.0.1';
  const socket = await new Promise<us_listen_socket>((resolve, reject) => {
    app.listen(host, options.port ?? 0, (s) => (s === false ? reject(new Error(`cannot listen on ${host}:${options.port ?? 0} (port taken?)`)) : resolve(s)));
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

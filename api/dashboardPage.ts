/**
 * Serves the dashboard page that `npm run build` bundled into `dist/web/` (see webBuild.ts):
 * `/` is index.html, revalidated each time; `/assets/*` are
 * content-hashed, so cached for a year. Files are read once at start and kept with their
 * gzip form; a client that accepts gzip gets that.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { HttpRequest, HttpResponse, TemplatedApp } from 'uWebSockets.js';
import { guarded, headBytes, headersTooLarge, MAX_HEADER_BYTES } from './http.js';
import type { LogLine } from '../core/log.js';

/** Where the build puts the page, beside the compiled api. */
export const WEB_DIR = new URL('../web/', import.meta.url);

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.map': 'application/json',
};

interface StaticFile {
  body: Buffer;
  gzip: Buffer | null;
  type: string;
  etag: string;
  immutable: boolean;
}

export interface DashboardPage {
  /** False when the page was not built: `/` then says how to build it. */
  readonly built: boolean;
  /** Registers `/` and the assets; `log` gets what a bug in a handler would have thrown. */
  attach(app: TemplatedApp, log?: LogLine): void;
}

function load(path: string, immutable: boolean): StaticFile {
  const body = readFileSync(path);
  const ext = path.slice(path.lastIndexOf('.'));
  const gzip = body.length > 1024 && ext !== '.map' ? gzipSync(body, { level: 9 }) : null;
  return {
    body,
    gzip,
    type: TYPES[ext] ?? 'application/octet-stream',
    etag: `"${createHash('sha1').update(body).digest('base64url').slice(0, 20)}"`,
    immutable,
  };
}

export function loadDashboardPage(dir: URL = WEB_DIR): DashboardPage {
  const root = dir.pathname;
  const files = new Map<string, StaticFile>();
  const index = join(root, 'index.html');
  if (existsSync(index)) {
    files.set('/', load(index, false));
    const assets = join(root, 'assets');
    if (existsSync(assets)) for (const name of readdirSync(assets)) files.set(`/assets/${name}`, load(join(assets, name), true));
  }
  const send = (res: HttpResponse, req: HttpRequest, file: StaticFile): void => {
    const bytes = headBytes(req);
    if (bytes > MAX_HEADER_BYTES) throw headersTooLarge(bytes);
    const gzip = file.gzip !== null && /\bgzip\b/.test(req.getHeader('accept-encoding'));
    if (req.getHeader('if-none-match') === file.etag) {
      res.cork(() => res.writeStatus('304 Not Modified').writeHeader('etag', file.etag).end());
      return;
    }
    res.cork(() => {
      res.writeStatus('200 OK').writeHeader('content-type', file.type).writeHeader('etag', file.etag).writeHeader('vary', 'accept-encoding');
      res.writeHeader('cache-control', file.immutable ? 'public, max-age=31536000, immutable' : 'no-cache');
      if (!file.immutable) res.writeHeader('x-content-type-options', 'nosniff').writeHeader('referrer-policy', 'no-referrer');
      if (gzip) res.writeHeader('content-encoding', 'gzip');
      res.end(gzip ? (file.gzip as Buffer) : file.body);
    });
  };
  const page = files.get('/');
  return {
    built: page !== undefined,
    attach(app, log = (line) => void process.stderr.write(`${line}\n`)) {
      // guarded: nothing thrown in a uWS handler may reach uWS (it would end the process).
      for (const [path, file] of files) if (path !== '/') app.get(path, (res, req) => guarded(res, log, `GET ${path}`, () => send(res, req, file)));
      // One path: the app routes with the URL hash (#/devices), so no page path can shadow an api route.
      app.get('/', (res, req) =>
        guarded(res, log, 'GET /', () => {
          if (page) send(res, req, page);
          else
            res.cork(() =>
              res
                .writeStatus('503 Service Unavailable')
                .writeHeader('content-type', 'text/plain; charset=utf-8')
                .end('The dashboard page is not built: run `npm run build`.\n'),
            );
        }),
      );
    },
  };
}

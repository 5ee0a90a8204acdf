/**
 * An HTTP fuzzer for the api: requests generated from the route table's own schemas (read
 * from `/openapi.json`, which is generated from the routes' zod schemas, so a running api at
 * any URL can be fuzzed) and from well outside them: broken percent-encoding in paths and
 * queries, path parameters with unicode, control characters and very long values, bodies over
 * and under the size limit, deeply nested and malformed JSON, wrong content types and methods,
 * with each token given and with none or a forged one.
 *
 * What must hold for every request: no 5xx, every 4xx in the error envelope
 * `{ "error": { "code", "message", "details" } }`, an answer at all (a dropped connection is a
 * failure), and `/healthz` answering afterwards.
 *
 * It writes (policies, rules, devices, assignments, remediation requests) when given tokens
 * that may: run it against a disposable deployment. Uses fast-check (a devDependency).
 *
 * ```ts
 * const r = await fuzzApi({ url: api.url, tokens: { admin: '…' }, durationMs: 60_000 });
 * if (r.fiveXX > 0 || r.failures.length > 0 || !r.alive) …
 * ```
 */
import { Agent, request } from 'node:http';
import fc from 'fast-check';

export interface FuzzOptions {
  /** Base URL of the api, e.g. `http://127.0.0.1:8080`. */
  url: string;
  /** Access tokens to use, by any label (one per role is the point). Requests also go without a token and with a forged one. */
  tokens: Record<string, string>;
  /** Requests to send. @default 500 (or unbounded when `durationMs` is given) */
  cases?: number;
  /** Stop after this long (ms); whichever of `cases` and `durationMs` comes first. */
  durationMs?: number;
  /** fast-check seed: the same seed against the same api sends the same requests. @default random */
  seed?: number;
  /** Requests in flight at once. @default 4 */
  concurrency?: number;
  /** Ids to put in path and query parameters besides generated ones (ids that exist make requests reach further). */
  ids?: readonly string[];
  /** Body size limit of the api, to send bodies just under and over it. @default 64 KiB */
  bodyLimitBytes?: number;
  /** Per-request timeout (ms): no answer within it is a failure. @default 15000 */
  timeoutMs?: number;
}

export interface FuzzRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  /** The body as sent, cut to 2 KB for the report. */
  body: string | null;
  /** What the case was meant to exercise. */
  kind: string;
}

export interface FuzzFailure {
  request: FuzzRequest;
  /** 0: no answer (connection dropped or timed out). */
  status: number;
  body: string;
  reason: string;
}

export interface FuzzResult {
  cases: number;
  byStatus: Record<number, number>;
  fiveXX: number;
  failures: FuzzFailure[];
  /** Whether `/healthz` answered 200 after the run. */
  alive: boolean;
  seed: number;
  durationMs: number;
}

// ---- the route table, from /openapi.json ----------------------------------------------------

type JsonSchema = {
  type?: string | string[];
  enum?: unknown[];
  const?: unknown;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: boolean | JsonSchema;
  items?: JsonSchema;
  minItems?: number;
  maxItems?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  allOf?: JsonSchema[];
  format?: string;
  default?: unknown;
};

export interface RouteSpec {
  method: string;
  /** `/roles/{role_id}/policies/{policy_id}` */
  path: string;
  pathParams: string[];
  query: Array<{ name: string; required: boolean; schema: JsonSchema }>;
  body: JsonSchema | null;
  bodyRequired: boolean;
  public: boolean;
}

/** The parts of an OpenAPI operation the fuzzer reads. */
interface OpenApiOperation {
  parameters?: Array<{ name: string; in: string; required?: boolean; schema?: JsonSchema }>;
  requestBody?: { required?: boolean; content?: Record<string, { schema?: JsonSchema } | undefined> };
  security?: unknown[];
}

export async function routeTable(url: string): Promise<RouteSpec[]> {
  const r = await fetch(new URL('/openapi.json', url));
  if (r.status !== 200) throw new Error(`fuzzApi: GET /openapi.json answered ${r.status}`);
  const doc = (await r.json()) as { paths: Record<string, Record<string, OpenApiOperation>> };
  const routes: RouteSpec[] = [];
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const params = op.parameters ?? [];
      const body = op.requestBody?.content?.['application/json']?.schema;
      routes.push({
        method: method.toUpperCase(),
        path,
        pathParams: params.filter((p) => p.in === 'path').map((p) => p.name),
        query: params.filter((p) => p.in === 'query').map((p) => ({ name: p.name, required: p.required === true, schema: p.schema ?? {} })),
        body: body ?? null,
        bodyRequired: op.requestBody?.required === true,
        public: Array.isArray(op.security) && op.security.length === 0,
      });
    }
  }
  return routes;
}

// ---- values from a JSON schema --------------------------------------------------------------

const nasty = fc.constantFrom(
  '',
  ' ',
  'null',
  '-1',
  '0',
  '1e309',
  'NaN',
  'Infinity',
  '../../etc/passwd',
  '<script>alert(1)</script>',
  "'; DROP TABLE app_usage; --",
  '{{7*7}}',
  '\u0000',
  '\u202e\u200b',
  '😀'.repeat(50),
  'é'.repeat(300),
  'x'.repeat(5000),
  '%ZZ',
  '\uD800',
);

function pickIds(ids: readonly string[]): fc.Arbitrary<string> {
  const generated = fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/);
  return ids.length === 0 ? generated : fc.oneof({ arbitrary: fc.constantFrom(...ids), weight: 3 }, { arbitrary: generated, weight: 1 });
}

/** Ids for a field: `role_id` draws from the ids that look like roles, when there are any. */
export type IdPool = (field: string | null) => fc.Arbitrary<string>;

export function idPool(ids: readonly string[]): IdPool {
  const any = pickIds(ids);
  const byStem = new Map<string, fc.Arbitrary<string>>();
  return (field) => {
    if (field === null) return any;
    const stem = field.replace(/_ids?$/, '');
    let arb = byStem.get(stem);
    if (arb === undefined) {
      const matching = ids.filter(
        (id) =>
          id.toLowerCase().includes(stem.toLowerCase()) ||
          (stem === 'enterprise' && /^[a-z]+$/.test(id)) ||
          (stem === 'user' && /-u\d+$/.test(id)) ||
          (stem === 'role' && /^role/.test(id)),
      );
      arb = matching.length === 0 ? any : fc.oneof({ arbitrary: fc.constantFrom(...matching), weight: 4 }, { arbitrary: any, weight: 1 });
      byStem.set(stem, arb);
    }
    return arb;
  };
}

/** Values that mostly satisfy `schema`, sometimes not; `depth` bounds recursion. */
function valueOf(schema: JsonSchema, pool: IdPool, depth = 0, field: string | null = null): fc.Arbitrary<unknown> {
  const ids = pool(field);
  const wild = fc.oneof(fc.jsonValue({ maxDepth: 2 }), nasty);
  if (depth > 4) return wild;
  const valid = validValueOf(schema, pool, ids, depth, field);
  return fc.oneof({ arbitrary: valid, weight: 12 }, { arbitrary: wild, weight: 1 });
}

function validValueOf(schema: JsonSchema, pool: IdPool, ids: fc.Arbitrary<string>, depth: number, field: string | null = null): fc.Arbitrary<unknown> {
  if (schema.const !== undefined) return fc.constant(schema.const);
  if (Array.isArray(schema.enum) && schema.enum.length > 0) return fc.constantFrom(...schema.enum);
  const alternatives = schema.anyOf ?? schema.oneOf;
  if (alternatives !== undefined && alternatives.length > 0) return fc.oneof(...alternatives.map((s) => valueOf(s, pool, depth + 1)));
  if (schema.allOf !== undefined && schema.allOf.length > 0) return valueOf(schema.allOf[0]!, pool, depth + 1);
  const types = Array.isArray(schema.type) ? schema.type : schema.type === undefined ? [] : [schema.type];
  if (types.length > 1) return fc.oneof(...types.map((t) => validValueOf({ ...schema, type: t }, pool, ids, depth, field)));
  switch (types[0]) {
    case 'null':
      return fc.constant(null);
    case 'boolean':
      return fc.boolean();
    case 'integer': {
      const min = schema.minimum ?? (schema.exclusiveMinimum !== undefined ? schema.exclusiveMinimum + 1 : -1000);
      const max = schema.maximum ?? (schema.exclusiveMaximum !== undefined ? schema.exclusiveMaximum - 1 : 1_000_000);
      return fc.oneof(fc.integer({ min: Math.max(min, -(2 ** 31)), max: Math.min(max, 2 ** 31) }), fc.constantFrom(min - 1, max + 1, 0));
    }
    case 'number':
      return fc.oneof(
        fc.double({ noNaN: true, noDefaultInfinity: true, min: schema.minimum ?? -1e6, max: schema.maximum ?? 1e15 }),
        fc.constantFrom(0, -1, 1.5),
      );
    case 'string': {
      if (schema.pattern !== undefined) {
        try {
          return fc.oneof({ arbitrary: ids, weight: 4 }, { arbitrary: fc.stringMatching(new RegExp(schema.pattern)), weight: 1 });
        } catch {
          // a pattern fast-check cannot generate from
        }
      }
      const maxLength = Math.min(schema.maxLength ?? 80, 300);
      return fc.oneof(
        { arbitrary: ids, weight: field === null ? 1 : 3 },
        fc.string({ minLength: schema.minLength ?? 0, maxLength }),
        fc.string({ unit: 'grapheme', maxLength: 20 }),
        fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
      );
    }
    case 'array': {
      const items = schema.items ?? {};
      return fc.array(valueOf(items, pool, depth + 1), { minLength: schema.minItems ?? 0, maxLength: Math.min(schema.maxItems ?? 4, 6) });
    }
    case 'object': {
      const props = schema.properties ?? {};
      const required = new Set(schema.required ?? []);
      const shape: Record<string, fc.Arbitrary<unknown>> = {};
      // Optional fields now and then (each one given makes a refusal likelier: reach the handlers).
      for (const [k, s] of Object.entries(props))
        shape[k] = required.has(k) ? valueOf(s, pool, depth + 1, k) : fc.option(valueOf(s, pool, depth + 1, k), { freq: 2, nil: undefined });
      const base = fc.record(shape).map((o) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)));
      // Now and then an unknown field (strict objects refuse it with a 400).
      const unknownField = fc.oneof(
        { arbitrary: fc.constant(null), weight: 10 },
        { arbitrary: fc.tuple(fc.string({ minLength: 1, maxLength: 10 }), fc.jsonValue({ maxDepth: 1 })), weight: 1 },
      );
      return fc.tuple(base, unknownField).map(([o, extra]) => (extra === null ? o : { ...(o as object), [extra[0]]: extra[1] }));
    }
    default:
      return fc.jsonValue({ maxDepth: 2 });
  }
}

// ---- requests --------------------------------------------------------------------------------

export interface Draft {
  kind: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string | Buffer | null;
}

/** Percent-encoding that does not throw on lone surrogates (they become U+FFFD). */
const enc = (s: string): string => encodeURIComponent(s.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD'));

const BAD_ENCODINGS = ['%ZZ', '%', '%E0%A4%A', '%C0%AF', '%ED%A0%80', '%FF', '%00', '%2', '%%', '%u2603', '%2F..%2F'];

/** A path segment: an id, an encoded oddity, or raw broken percent-encoding. */
function segment(pool: IdPool, field: string): fc.Arbitrary<string> {
  const ids = pool(field);
  return fc.oneof(
    { arbitrary: ids.map(enc), weight: 6 },
    { arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }).map(enc), weight: 2 },
    { arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 10 }).map(enc), weight: 1 },
    { arbitrary: fc.integer({ min: 100, max: 3000 }).map((n) => 'a'.repeat(n)), weight: 1 },
    { arbitrary: fc.constantFrom(...BAD_ENCODINGS).chain((bad) => ids.map((id) => `${enc(id)}${bad}`)), weight: 3 },
    { arbitrary: fc.constantFrom(...BAD_ENCODINGS), weight: 2 },
  );
}

function queryValue(v: unknown): string[] {
  if (Array.isArray(v)) return v.flatMap((x) => queryValue(x));
  if (v === null || v === undefined) return [''];
  return [typeof v === 'string' ? v : JSON.stringify(v)];
}

function queryString(route: RouteSpec, pool: IdPool): fc.Arbitrary<string> {
  const params = route.query.map((q) =>
    fc.option(
      valueOf(q.schema, pool, 0, q.name).map((v) =>
        queryValue(v)
          .map((x) => `${enc(q.name)}=${enc(x)}`)
          .join('&'),
      ),
      { freq: q.required ? 8 : 2 },
    ),
  );
  const extra = fc.oneof(
    { arbitrary: fc.constant(''), weight: 6 },
    { arbitrary: fc.constantFrom(...BAD_ENCODINGS).map((bad) => `${route.query[0]?.name ?? 'x'}=${bad}`), weight: 2 },
    { arbitrary: fc.constantFrom(...BAD_ENCODINGS).map((bad) => `${bad}=1`), weight: 1 },
    { arbitrary: fc.tuple(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 })).map(([k, v]) => `${enc(k)}=${enc(v)}`), weight: 1 },
    {
      arbitrary: fc.constantFrom(
        'from=-1',
        'to=-1',
        'to=Infinity',
        'from=2026-01-02&to=2026-01-01',
        'range=1h&from=2026-01-01',
        'page=0',
        'limit=100000',
        'page=1e3',
        'severity=high&severity=low',
        '&&&',
        '=',
        'a=1&a=2&a=3',
      ),
      weight: 2,
    },
  );
  return fc.tuple(fc.tuple(...params), extra).map(([ps, x]) => [...ps.filter((p): p is string => p !== null && p !== ''), ...(x === '' ? [] : [x])].join('&'));
}

function bodyOf(route: RouteSpec, pool: IdPool, limit: number): fc.Arbitrary<{ kind: string; body: string | Buffer | null; type: string | null }> {
  const json = (kind: string) => (v: unknown) => ({ kind, body: JSON.stringify(v) ?? 'null', type: 'application/json' });
  const schema = route.body ?? { type: 'object' };
  return fc.oneof(
    { arbitrary: valueOf(schema, pool).map(json('schema body')), weight: 10 },
    { arbitrary: fc.constant({ kind: 'no body', body: null, type: null }), weight: 2 },
    { arbitrary: fc.jsonValue({ maxDepth: 3 }).map(json('any JSON')), weight: 2 },
    {
      arbitrary: fc
        .constantFrom('{', '{"a":', '[1,2', 'nul', '{"a":1}}', '\u0000', '\uFEFF{}', '{"__proto__":{"polluted":1}}', '{"constructor":{"prototype":{"x":1}}}')
        .map((b) => ({ kind: 'malformed JSON', body: b, type: 'application/json' })),
      weight: 2,
    },
    {
      arbitrary: fc
        .integer({ min: 10, max: Math.floor(limit / 2) - 10 })
        .map((n) => ({ kind: 'deeply nested JSON under the limit', body: '['.repeat(n) + ']'.repeat(n), type: 'application/json' })),
      weight: 1,
    },
    {
      arbitrary: fc
        .integer({ min: 10, max: 3000 })
        .map((n) => ({ kind: 'deeply nested object', body: '{"a":'.repeat(n) + '1' + '}'.repeat(n), type: 'application/json' })),
      weight: 1,
    },
    {
      arbitrary: fc
        .constantFrom(limit - 64, limit + 1, limit * 2, limit * 8)
        .map((n) => ({ kind: 'body near or over the limit', body: JSON.stringify({ name: 'x'.repeat(Math.max(0, n - 12)) }), type: 'application/json' })),
      weight: 1,
    },
    {
      arbitrary: valueOf(schema, pool).chain((v) =>
        fc
          .constantFrom('text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', '')
          .map((type) => ({ kind: 'wrong content type', body: JSON.stringify(v) ?? '', type })),
      ),
      weight: 1,
    },
    { arbitrary: fc.uint8Array({ maxLength: 200 }).map((b) => ({ kind: 'binary body', body: Buffer.from(b), type: 'application/octet-stream' })), weight: 1 },
  );
}

export function draftOf(routes: readonly RouteSpec[], tokens: readonly string[], pool: IdPool, limit: number): fc.Arbitrary<Draft> {
  const token = fc.oneof(
    { arbitrary: tokens.length === 0 ? fc.constant<string | null>(null) : fc.constantFrom<string | null>(...tokens), weight: 6 },
    { arbitrary: fc.constant<string | null>(null), weight: 2 },
    {
      arbitrary: fc.constantFrom<string | null>(
        'Bearer',
        'Bearer ',
        'Basic YWRtaW46YWRtaW4=',
        'Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbkBhY21lIn0.',
        'Bearer a.b.c',
        `Bearer ${'A'.repeat(3000)}`,
        'Bearer \u00e9t\u00e9',
      ),
      weight: 1,
    },
  );
  const route = fc.constantFrom(...routes);
  return fc.tuple(route, token, fc.nat({ max: 99 })).chain(([r, tok, roll]) => {
    const path = fc.tuple(...r.pathParams.map((name) => segment(pool, name))).map((segs) => {
      let i = 0;
      return r.path.replace(/\{[a-z_]+\}/g, () => segs[i++] ?? 'x');
    });
    const pathArb = r.pathParams.length === 0 ? fc.constant(r.path) : path;
    const methodArb =
      roll < 8
        ? fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD', 'TRACE').map((m) => ({ m, kind: 'any method' }))
        : fc.constant({ m: r.method, kind: 'route method' });
    const wantsBody = r.method === 'POST' || r.method === 'PUT' || r.method === 'PATCH';
    return fc
      .tuple(
        pathArb,
        queryString(r, pool),
        methodArb,
        wantsBody || roll < 12 ? bodyOf(r, pool, limit) : fc.constant({ kind: 'no body', body: null, type: null }),
      )
      .map(([p, q, { m, kind }, b]) => {
        const headers: Record<string, string> = {};
        // A real token is not spent on logging out: it is the fuzzer's key to the rest.
        const authorization =
          tok === null ? null : tok.startsWith('Bearer') || tok.startsWith('Basic') ? tok : r.path === '/auth/logout' ? 'Bearer a.b.c' : `Bearer ${tok}`;
        if (authorization !== null) headers['authorization'] = authorization;
        if (b.type !== null && b.type !== '') headers['content-type'] = b.type;
        if (b.body !== null) headers['content-length'] = String(Buffer.byteLength(b.body));
        return { kind: `${kind}; ${b.kind}`, method: m, path: q === '' ? p : `${p}?${q}`, headers, body: b.body };
      });
  });
}

// ---- sending and judging ----------------------------------------------------------------------

function send(base: URL, d: Draft, agent: Agent, timeoutMs: number): Promise<{ status: number; body: string; error?: string }> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (v: { status: number; body: string; error?: string }): void => {
      if (!settled) {
        settled = true;
        resolve(v);
      }
    };
    let req;
    try {
      req = request({ host: base.hostname, port: base.port, method: d.method, path: d.path, headers: d.headers, agent, timeout: timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => done({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', (e) => done({ status: res.statusCode ?? 0, body: '', error: e.message }));
      });
    } catch (e) {
      // Node refused to send it (a character http may not carry): not a finding about the api.
      return done({ status: -1, body: '', error: e instanceof Error ? e.message : String(e) });
    }
    req.on('timeout', () => {
      req.destroy(new Error(`no answer within ${timeoutMs} ms`));
    });
    req.on('error', (e) => done({ status: 0, body: '', error: e.message }));
    if (d.body === null) req.end();
    // (a body always goes with its Content-Length, set in draftOf: node:http would send a GET body with no length at all)
    else req.end(d.body);
  });
}

/** Why a reply breaks the contract, or null. */
function judge(d: Draft, status: number, body: string, bodyLimit: number): string | null {
  if (status >= 500) return `${status}: a 5xx`;
  if (status >= 400 && d.method !== 'HEAD') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      return `${status} without a JSON body`;
    }
    const e = typeof parsed === 'object' && parsed !== null ? (parsed as { error?: unknown }).error : undefined;
    if (typeof e !== 'object' || e === null) return `${status} not in the error envelope`;
    const { code, message } = e as { code?: unknown; message?: unknown };
    if (typeof code !== 'string' || typeof message !== 'string' || !('details' in e)) return `${status} not in the error envelope`;
  }
  void bodyLimit;
  return null;
}

const cut = (s: string | Buffer | null, n = 2048): string | null => {
  if (s === null) return null;
  const t = typeof s === 'string' ? s : `<${s.length} bytes>`;
  return t.length > n ? `${t.slice(0, n)}… (${t.length} chars)` : t;
};

/** Fuzzes the api at `url`; see the module comment for what is checked. */
export async function fuzzApi(opts: FuzzOptions): Promise<FuzzResult> {
  const started = Date.now();
  const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 31);
  const limit = opts.bodyLimitBytes ?? 64 * 1024;
  const concurrency = Math.max(1, opts.concurrency ?? 4);
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const maxCases = opts.cases ?? (opts.durationMs === undefined ? 500 : Number.POSITIVE_INFINITY);
  const deadline = opts.durationMs === undefined ? Number.POSITIVE_INFINITY : started + opts.durationMs;
  const base = new URL(opts.url);
  const routes = await routeTable(opts.url);
  const arb = draftOf(routes, Object.values(opts.tokens), idPool(opts.ids ?? []), limit);
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const result: FuzzResult = { cases: 0, byStatus: {}, fiveXX: 0, failures: [], alive: false, seed, durationMs: 0 };
  const BATCH = 100;
  let batch = 0;
  try {
    while (result.cases < maxCases && Date.now() < deadline) {
      // Batches of one run, and runs of nearby seeds, must not share cases.
      const batchSeed = (Math.imul(seed, 0x9e3779b1) ^ Math.imul(batch++ + 1, 0x85ebca6b)) | 0;
      const drafts = fc.sample(arb, { seed: batchSeed, numRuns: Math.min(BATCH, maxCases - result.cases) });
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < drafts.length && Date.now() < deadline) {
          const d = drafts[next++]!;
          const r = await send(base, d, agent, timeoutMs);
          if (r.status === -1) continue; // not sendable by node:http
          result.cases++;
          result.byStatus[r.status] = (result.byStatus[r.status] ?? 0) + 1;
          if (r.status >= 500) result.fiveXX++;
          const reason = r.status === 0 ? `no answer: ${r.error ?? 'connection closed'}` : judge(d, r.status, r.body, limit);
          if (reason !== null && result.failures.length < 100) {
            result.failures.push({
              request: { method: d.method, path: cut(d.path, 500)!, headers: d.headers, body: cut(d.body), kind: d.kind },
              status: r.status,
              body: cut(r.body, 1000) ?? '',
              reason,
            });
          }
        }
      };
      await Promise.all(Array.from({ length: concurrency }, worker));
    }
  } finally {
    agent.destroy();
  }
  // Alive afterwards: a fresh connection, a plain request.
  try {
    const h = await fetch(new URL('/healthz', opts.url), { signal: AbortSignal.timeout(5000) });
    result.alive = h.status === 200;
  } catch {
    result.alive = false;
  }
  result.durationMs = Date.now() - started;
  return result;
}

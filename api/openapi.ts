/**
 * The OpenAPI 3.1 document, generated from the route table (paths, parameters, bodies and
 * reply shapes are the routes' own zod schemas), so it cannot drift from what is served.
 */
import { z } from 'zod';
import type { ApiRoute } from './context.js';

const errorSchema = {
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message', 'details'],
      properties: { code: { type: 'string' }, message: { type: 'string' }, details: {} },
    },
  },
} as const;

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): Record<string, unknown> {
  const out = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Record<string, unknown>;
  delete out['$schema'];
  return out;
}

const ERROR_STATUSES: Readonly<Record<string, string>> = {
  '400': 'invalid query or body, or a path parameter that is not valid percent-encoding',
  '401': 'missing, invalid or expired token',
  '403': 'the account may not do this, or not for this enterprise',
  '404': 'no such resource (in this enterprise)',
  '412': 'If-Match names a stale revision',
  '413': 'body over the size limit',
  '429': 'rate limited; see Retry-After',
  '431': 'request headers over 4 KiB',
};

export function openApiDocument(routes: readonly ApiRoute[], version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const method = r.method === 'del' ? 'delete' : r.method;
    const pathParams = [...r.path.matchAll(/\{([a-z_]+)\}/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    const queryParams: unknown[] = [];
    if (r.query !== undefined) {
      const s = jsonSchema(r.query, 'input') as { properties?: Record<string, Record<string, unknown>>; required?: string[] };
      for (const [name, schema] of Object.entries(s.properties ?? {})) {
        queryParams.push({
          name,
          in: 'query',
          required: s.required?.includes(name) ?? false,
          schema,
          ...(typeof schema['description'] === 'string' ? { description: schema['description'] } : {}),
        });
      }
    }
    const ok = String(r.successStatus ?? 200);
    const responses: Record<string, unknown> = {
      [ok]:
        ok === '204'
          ? { description: 'done' }
          : { description: 'success', content: { 'application/json': { schema: r.response === undefined ? {} : jsonSchema(r.response, 'output') } } },
    };
    if (r.method === 'get') responses['304'] = { description: 'not modified (If-None-Match matched the ETag)' };
    for (const [status, description] of Object.entries(ERROR_STATUSES)) {
      if (r.access === 'public' && (status === '401' || status === '403')) continue;
      responses[status] = { description, content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
    }
    paths[r.path] ??= {};
    paths[r.path]![method] = {
      operationId: `${method}${r.path.replace(/[{}]/g, '').replace(/[/-]([a-z])/g, (_m, c: string) => c.toUpperCase())}`,
      summary: r.summary,
      tags: [r.tag],
      ...(r.access === 'public' ? { security: [] } : { 'x-towerwatch-access': r.access }),
      parameters: [...pathParams, ...queryParams],
      ...(r.body === undefined
        ? {}
        : { requestBody: { required: !r.body.safeParse(undefined).success, content: { 'application/json': { schema: jsonSchema(r.body, 'input') } } } }),
      responses,
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'towerwatch api',
      version,
      description: 'App-usage policy enforcement for carrier networks: dashboards, devices, policies, remediation. Live alerts: WebSocket /ws/alerts.',
    },
    servers: [{ url: '/' }],
    security: [{ bearer: [] }],
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } },
      schemas: { Error: errorSchema },
    },
    paths,
  };
}

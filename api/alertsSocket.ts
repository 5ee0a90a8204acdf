/**
 * `/ws/alerts`: violations pushed live to dashboards. One NATS subscription (`alerts.*`) per
 * api process, and one for dashboard events (`events.*`); each message is published once per
 * uWebSockets.js topic, and uWS fans it out to every subscribed socket in C++. Which socket gets
 * what is liveFanout.ts; this file is the NATS and uWS wiring, authentication and closing.
 *
 * A socket authenticates with `?token=<access token>` (checked before the upgrade: a bad one
 * gets an HTTP 401) or with a first message `{"type":"auth","token":…}` within 5 s; sending a
 * fresh token later extends the session. Close codes: 4001 unauthorized, 4002 token expired,
 * 4003 forbidden, 4008 slow consumer, 4000 bad message.
 */
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { HttpRequest, HttpResponse, TemplatedApp, WebSocket } from 'uWebSockets.js';
import { z } from 'zod';
import type { ControlPlaneView } from '../core/controlPlane/index.js';
import { SEVERITIES } from '../core/domain.js';
import {
  ALL_ALERTS_SUBJECT,
  ALL_ENTERPRISE_EVENTS_SUBJECT,
  decodeAlerts,
  enterpriseEventType,
  enterpriseOfSubject,
  type HeartbeatMessage,
  type PongMessage,
  type SubscribedMessage,
} from '../core/live.js';
import type { AuthService, Principal } from './auth.js';
import { ApiError, statusLine } from './errors.js';
import type { ApiMetrics } from './metrics.js';
import { headBytes, headersTooLarge, MAX_HEADER_BYTES, validationError } from './http.js';
import { HEARTBEAT_TOPIC, LiveFanout } from './liveFanout.js';
import { seenAlertKey, type RecentIds } from './recentIds.js';
import { scopeOf } from './tenancy.js';
import type { LogLine } from '../core/log.js';

export const CLOSE = { badMessage: 4000, unauthorized: 4001, tokenExpired: 4002, forbidden: 4003, slowConsumer: 4008 } as const;
export const DEFAULT_MAX_BACKPRESSURE_BYTES = 1024 * 1024;
const AUTH_TIMEOUT_MS = 5000;
const HEARTBEAT_EVERY_MS = 15_000;
const SWEEP_EVERY_MS = 1000;

const filtersSchema = z.strictObject({
  token: z.string().min(1).max(4096).optional(),
  enterprise_id: z.string().max(64).optional(),
  severity: z
    .string()
    .transform((s) => s.split(',').map((x) => x.trim()))
    .pipe(z.array(z.enum(SEVERITIES)).min(1))
    .optional()
    .describe('comma-separated'),
  tower_id: z.string().max(64).optional(),
  app_id: z.string().max(64).optional(),
  user_id: z.string().max(64).optional(),
  /** `batch=1`: alerts come as `{type:"alerts", alerts:[…]}`, one message per pipeline batch (pages that draw thousands a second). */
  batch: z
    .enum(['0', '1', 'true', 'false'])
    .transform((v) => v === '1' || v === 'true')
    .optional(),
});
type Filters = z.infer<typeof filtersSchema>;

interface SocketData {
  filters: Filters;
  principal: Principal | null;
  enterprise: string | null;
  authTimer: NodeJS.Timeout | null;
  closed: boolean;
}

export interface AlertsSocketOptions {
  nc: NatsConnection;
  view: ControlPlaneView;
  auth: AuthService;
  metrics: ApiMetrics;
  log: LogLine;
  /** A socket whose unsent data exceeds this is closed (4008). @default 1 MiB */
  maxBackpressureBytes?: number;
  /** @default 15000 */
  heartbeatEveryMs?: number;
  /** Alerts seen, as `<enterprise>|<alert_id>`: repeats are not sent again. */
  recentAlerts: RecentIds;
}

export interface AlertsSocket extends AsyncDisposable {
  /** Registers `/ws/alerts` on the app. */
  attach(app: TemplatedApp): void;
  /** Sends a typed message to every socket of an enterprise (e.g. `device.discovered`). */
  publish(enterprise: string, message: { type: string } & Record<string, unknown>): void;
  readonly connections: number;
  /** Ends every socket (1001) and stops listening for alerts. Idempotent. */
  close(): Promise<void>;
}

export function createAlertsSocket(options: AlertsSocketOptions): AlertsSocket {
  const { view, auth, metrics, log } = options;
  const maxBackpressure = options.maxBackpressureBytes ?? DEFAULT_MAX_BACKPRESSURE_BYTES;
  const sockets = new Set<WebSocket<SocketData>>();
  let app: TemplatedApp | null = null;
  const fanout = new LiveFanout<WebSocket<SocketData>>({
    numSubscribers: (topic) => app?.numSubscribers(topic) ?? 0,
    publish: (topic, message) => void app?.publish(topic, message),
    send: (ws, message) => void ws.send(message),
  });
  let sub: Subscription | null = null;
  let eventsSub: Subscription | null = null;

  const end = (ws: WebSocket<SocketData>, code: number, reason: string, metric: string): void => {
    const d = ws.getUserData();
    if (d.closed) return;
    d.closed = true;
    metrics.socketsDropped.inc({ reason: metric });
    try {
      ws.end(code, reason);
    } catch (err) {
      log(`ws: could not close a socket: ${err instanceof Error ? err.message : String(err)}`, 'warn');
    }
  };

  const subscribe = (ws: WebSocket<SocketData>, principal: Principal): void => {
    const d = ws.getUserData();
    const enterprise = scopeOf(view, principal, d.filters.enterprise_id);
    if (d.enterprise !== null && d.enterprise !== enterprise) throw new ApiError(403, 'forbidden', 'a socket stays with its enterprise');
    d.principal = principal;
    if (d.enterprise !== null) return; // a refreshed token: subscriptions stay
    d.enterprise = enterprise;
    if (d.authTimer !== null) clearTimeout(d.authTimer);
    d.authTimer = null;
    for (const topic of fanout.join(ws, enterprise, d.filters)) ws.subscribe(topic);
    ws.send(
      JSON.stringify({
        type: 'subscribed',
        enterprise_id: enterprise,
        filters: { ...d.filters, token: undefined },
        expires_at: new Date(principal.expiresAt * 1000).toISOString(),
      } satisfies SubscribedMessage),
    );
  };

  const refuse = (ws: WebSocket<SocketData>, err: unknown): void => {
    if (err instanceof ApiError) {
      const code = err.code === 'token_expired' ? CLOSE.tokenExpired : err.status === 403 || err.status === 400 ? CLOSE.forbidden : CLOSE.unauthorized;
      end(ws, code, err.code, err.code);
    } else {
      log(`ws: ${err instanceof Error ? err.message : String(err)}`);
      end(ws, 1011, 'internal', 'internal');
    }
  };

  const sweep = setInterval(() => {
    const now = auth.nowSeconds();
    for (const ws of sockets) {
      const d = ws.getUserData();
      if (d.closed) continue;
      if (ws.getBufferedAmount() >= maxBackpressure) end(ws, CLOSE.slowConsumer, 'slow consumer: messages are not being read', 'slow_consumer');
      else if (d.principal !== null && d.principal.expiresAt <= now)
        end(ws, CLOSE.tokenExpired, 'token expired: send a fresh one or reconnect', 'token_expired');
      else if (d.principal !== null && auth.isRevoked(d.principal.family)) end(ws, CLOSE.unauthorized, 'session ended', 'session_revoked');
    }
  }, SWEEP_EVERY_MS);
  sweep.unref();
  const heartbeat = setInterval(() => {
    if (app !== null && sockets.size > 0)
      app.publish(HEARTBEAT_TOPIC, JSON.stringify({ type: 'heartbeat', ts: new Date().toISOString() } satisfies HeartbeatMessage));
  }, options.heartbeatEveryMs ?? HEARTBEAT_EVERY_MS);
  heartbeat.unref();

  // Alerts come at least once (api/recentIds.ts says why); each goes to the sockets once.
  const recent = options.recentAlerts;
  // A message that does not decode is logged and dropped: it must not take the api down.
  sub = options.nc.subscribe(ALL_ALERTS_SUBJECT, {
    callback: (err, msg) => {
      if (err !== null) return log(`ws: alerts subscription: ${err.message}`);
      const decoded = decodeAlerts(msg.data);
      if (!decoded.ok) return log(`ws: unreadable message on ${msg.subject}: ${decoded.reason}`, 'warn');
      if (app === null) return;
      try {
        metrics.alertsReceived.inc(decoded.value.length);
        const fresh = decoded.value.filter((a) => recent.add(seenAlertKey(a.enterprise_id, a.alert_id)));
        if (fresh.length < decoded.value.length) metrics.alertsRepeated.inc(decoded.value.length - fresh.length);
        if (fresh.length === 0) return;
        const sent = fanout.alerts(fresh);
        if (sent.alert > 0) metrics.socketMessages.inc({ type: 'alert' }, sent.alert);
        if (sent.alerts > 0) metrics.socketMessages.inc({ type: 'alerts' }, sent.alerts);
      } catch (e) {
        log(`ws: could not deliver alerts from ${msg.subject}: ${e instanceof Error ? e.message : String(e)}`, 'warn');
      }
    },
  });

  /** A typed message to every authenticated socket of an enterprise, whatever its filters. */
  const toEnterprise = (enterprise: string, type: string, text: string): void => {
    if (app === null) return;
    const n = fanout.toEnterprise(enterprise, text);
    if (n > 0) metrics.socketMessages.inc({ type }, n);
  };

  // Dashboard events (remediation outcomes, discovered devices), forwarded as they came.
  eventsSub = options.nc.subscribe(ALL_ENTERPRISE_EVENTS_SUBJECT, {
    callback: (err, msg) => {
      if (err !== null || app === null) return;
      const enterprise = enterpriseOfSubject(msg.subject);
      const text = msg.string();
      const type = enterpriseEventType(text);
      if (enterprise === null || !type.ok)
        return log(`ws: unreadable message on ${msg.subject}: ${type.ok ? 'no enterprise in the subject' : type.reason}`, 'warn');
      try {
        toEnterprise(enterprise, type.value, text);
      } catch (e) {
        log(`ws: could not deliver an event from ${msg.subject}: ${e instanceof Error ? e.message : String(e)}`, 'warn');
      }
    },
  });

  const onOpen = (ws: WebSocket<SocketData>): void => {
    sockets.add(ws);
    metrics.sockets.set(sockets.size);
    const d = ws.getUserData();
    if (d.principal !== null) subscribe(ws, d.principal);
    else d.authTimer = setTimeout(() => end(ws, CLOSE.unauthorized, 'no auth message within 5 s', 'auth_timeout'), AUTH_TIMEOUT_MS);
  };

  const onClose = (ws: WebSocket<SocketData>): void => {
    const d = ws.getUserData();
    d.closed = true;
    if (d.authTimer !== null) clearTimeout(d.authTimer);
    sockets.delete(ws);
    if (d.enterprise !== null) fanout.leave(ws, d.enterprise);
    metrics.sockets.set(sockets.size);
  };

  const onMessage = (ws: WebSocket<SocketData>, message: ArrayBuffer): void => {
    let m: unknown;
    try {
      m = JSON.parse(Buffer.from(message).toString('utf8'));
    } catch {
      return end(ws, CLOSE.badMessage, 'messages must be JSON', 'bad_message');
    }
    // Any JSON parses: null, numbers and arrays are bad messages, not a crash.
    const o = typeof m === 'object' && m !== null && !Array.isArray(m) ? (m as { type?: unknown; token?: unknown }) : {};
    if (o.type === 'ping') {
      ws.send(JSON.stringify({ type: 'pong', ts: new Date().toISOString() } satisfies PongMessage));
      return;
    }
    if (o.type !== 'auth' || typeof o.token !== 'string' || o.token.length > 4096)
      return end(ws, CLOSE.badMessage, 'expected {"type":"auth","token":…} or {"type":"ping"}', 'bad_message');
    void auth.verifyAccessToken(o.token).then(
      (principal) => {
        if (ws.getUserData().closed) return;
        try {
          subscribe(ws, principal);
        } catch (err) {
          refuse(ws, err);
        }
      },
      (err: unknown) => {
        if (!ws.getUserData().closed) refuse(ws, err);
      },
    );
  };

  return {
    get connections() {
      return sockets.size;
    },
    publish(enterprise, message) {
      toEnterprise(enterprise, message.type, JSON.stringify(message));
    },
    attach(target) {
      app = target;
      target.ws<SocketData>('/ws/alerts', {
        maxPayloadLength: 16 * 1024,
        // uWS drops what would exceed twice the limit (memory stays bounded), and never lets the
        // buffer reach it; the sweep closes a socket at the limit itself.
        maxBackpressure: 2 * maxBackpressure,
        closeOnBackpressureLimit: 0,
        idleTimeout: 60,
        sendPingsAutomatically: true,
        upgrade: (res: HttpResponse, req: HttpRequest, context) => {
          const aborted = { value: false };
          const reject = (err: ApiError): void => {
            if (aborted.value) return;
            aborted.value = true; // answered: nothing more is written
            try {
              res.cork(() => res.writeStatus(statusLine(err.status)).writeHeader('content-type', 'application/json').end(JSON.stringify(err.body())));
            } catch (e) {
              log(`ws: could not refuse an upgrade: ${e instanceof Error ? e.message : String(e)}`, 'warn');
            }
          };
          // Nothing thrown here may reach uWS (it would end the process): a bug is a 500.
          try {
            res.onAborted(() => (aborted.value = true));
            const key = req.getHeader('sec-websocket-key');
            const protocol = req.getHeader('sec-websocket-protocol');
            const extensions = req.getHeader('sec-websocket-extensions');
            const bytes = headBytes(req);
            if (bytes > MAX_HEADER_BYTES) return reject(headersTooLarge(bytes));
            const parsed = filtersSchema.safeParse(Object.fromEntries(new URLSearchParams(req.getQuery() ?? '')));
            if (!parsed.success) return reject(validationError('query', parsed.error));
            const filters = parsed.data;
            const data: SocketData = { filters, principal: null, enterprise: null, authTimer: null, closed: false };
            void (async () => {
              if (filters.token !== undefined) {
                try {
                  const principal = await auth.verifyAccessToken(filters.token);
                  scopeOf(view, principal, filters.enterprise_id);
                  data.principal = principal;
                } catch (err) {
                  if (err instanceof ApiError) return reject(err);
                  throw err;
                }
              }
              if (aborted.value) return;
              res.cork(() => res.upgrade(data, key, protocol, extensions, context));
            })().catch((err: unknown) => {
              log(`ws: upgrade failed: ${err instanceof Error ? err.message : String(err)}`, 'warn');
              reject(new ApiError(500, 'internal', 'internal error; the server log has the details'));
            });
          } catch (err) {
            log(`ws: upgrade failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`, 'error');
            reject(new ApiError(500, 'internal', 'internal error; the server log has the details'));
          }
        },
        open: (ws) => {
          try {
            onOpen(ws);
          } catch (err) {
            refuse(ws, err);
          }
        },
        message: (ws, message) => {
          // Nothing thrown here may reach uWS (it would end the process).
          try {
            onMessage(ws, message);
          } catch (err) {
            refuse(ws, err);
          }
        },
        close: (ws) => {
          try {
            onClose(ws);
          } catch (err) {
            log(`ws: close: ${err instanceof Error ? err.message : String(err)}`);
          }
        },
      });
    },
    async close() {
      clearInterval(sweep);
      clearInterval(heartbeat);
      sub?.unsubscribe();
      sub = null;
      eventsSub?.unsubscribe();
      eventsSub = null;
      for (const ws of [...sockets]) {
        const d = ws.getUserData();
        if (!d.closed) {
          d.closed = true;
          ws.end(1001, 'server shutting down');
        }
      }
      await Promise.resolve();
    },
    [Symbol.asyncDispose]() {
      return this.close();
    },
  };
}

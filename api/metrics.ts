/** The api's Prometheus metrics (prom-client), one registry per server. */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export class ApiMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'towerwatch_api_requests_total',
    help: 'HTTP requests by route and status',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  });
  readonly latency = new Histogram({
    name: 'towerwatch_api_request_duration_seconds',
    help: 'HTTP request latency by route',
    labelNames: ['method', 'route'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly sockets = new Gauge({ name: 'towerwatch_ws_connections', help: 'open /ws/alerts sockets', registers: [this.registry] });
  readonly socketMessages = new Counter({
    name: 'towerwatch_ws_messages_total',
    help: 'messages sent on /ws/alerts by type',
    labelNames: ['type'] as const,
    registers: [this.registry],
  });
  readonly socketsDropped = new Counter({
    name: 'towerwatch_ws_dropped_total',
    help: 'sockets closed by the server, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly alertsReceived = new Counter({
    name: 'towerwatch_alerts_received_total',
    help: 'violations received from NATS alerts.*',
    registers: [this.registry],
  });
  readonly alertsRepeated = new Counter({
    name: 'towerwatch_alerts_repeated_total',
    help: 'alerts received again (a batch redelivered after a pipeline crash) and not sent to sockets twice',
    registers: [this.registry],
  });

  // Label children kept: prom-client hashes the label set on every call otherwise.
  readonly #requestChildren = new Map<string, { inc(): void }>();
  readonly #latencyChildren = new Map<string, { observe(v: number): void }>();

  observeRequest(method: string, route: string, status: number, seconds: number): void {
    const key = `${method} ${route}`;
    const rkey = `${key} ${status}`;
    let r = this.#requestChildren.get(rkey);
    if (r === undefined) this.#requestChildren.set(rkey, (r = this.requests.labels(method, route, String(status))));
    r.inc();
    let l = this.#latencyChildren.get(key);
    if (l === undefined) this.#latencyChildren.set(key, (l = this.latency.labels(method, route)));
    l.observe(seconds);
  }

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'towerwatch_api_' });
  }
}

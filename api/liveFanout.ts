/**
 * Which `/ws/alerts` sockets get which message. Pure bookkeeping over a hub of topics, so the
 * rules are tested without uWS or NATS; alertsSocket.ts wires it to NATS and to the uWS app,
 * which is the hub (a topic publish fans out in C++).
 *
 * Every socket subscribes its enterprise's topics: one for typed events, and one for alerts
 * (`alerts/<enterprise>`; per severity when it filters on severity only; a batch topic with
 * `batch=1`). Sockets with other filters (tower, app, user, or severity with `batch=1`) are
 * few: they are kept here and sent to one by one.
 */
import type { Severity } from '../core/domain.js';
import type { Alert, AlertMessage, AlertsMessage, LiveAlert } from '../core/live.js';
import { alertView } from './alerts.js';

/** What a socket asked for (the `/ws/alerts` query), as far as fan-out cares. */
export interface LiveFilters {
  severity?: readonly Severity[] | undefined;
  tower_id?: string | undefined;
  app_id?: string | undefined;
  user_id?: string | undefined;
  /** Alerts as one `alerts` message per pipeline batch. */
  batch?: boolean | undefined;
}

/** Publishes by topic and sends to one socket: the uWS app in the api, a recorder in tests. */
export interface FanoutHub<S> {
  numSubscribers(topic: string): number;
  publish(topic: string, message: string): void;
  send(socket: S, message: string): void;
}

/** Messages sent, by type (a topic publish counts once per subscriber). */
export interface FanoutCounts {
  alert: number;
  alerts: number;
}

export const HEARTBEAT_TOPIC = 'heartbeat';
const alertTopic = (enterprise: string): string => `alerts/${enterprise}`;
const enterpriseTopic = (enterprise: string): string => `enterprise/${enterprise}`;
const severityTopic = (enterprise: string, severity: string): string => `alerts/${enterprise}/severity/${severity}`;
const batchTopic = (enterprise: string): string => `alerts/${enterprise}/batch`;

/** Filters no topic can express: the socket is sent to one by one. */
export function needsOwnSend(f: LiveFilters): boolean {
  return f.tower_id !== undefined || f.app_id !== undefined || f.user_id !== undefined || (f.batch === true && f.severity !== undefined);
}

export function matches(f: LiveFilters, a: LiveAlert): boolean {
  return (
    (f.severity === undefined || f.severity.includes(a.severity as Severity)) &&
    (f.tower_id === undefined || f.tower_id === a.tower_id) &&
    (f.app_id === undefined || f.app_id === a.app_id) &&
    (f.user_id === undefined || f.user_id === a.user_id)
  );
}

export class LiveFanout<S> {
  readonly #hub: FanoutHub<S>;
  /** Sockets sent to one by one, per enterprise. */
  readonly #own = new Map<string, Map<S, LiveFilters>>();

  constructor(hub: FanoutHub<S>) {
    this.#hub = hub;
  }

  /** A socket of an enterprise: returns the topics it subscribes, and keeps it if it needs its own sends. */
  join(socket: S, enterprise: string, filters: LiveFilters): string[] {
    const topics = [HEARTBEAT_TOPIC, enterpriseTopic(enterprise)];
    if (needsOwnSend(filters)) {
      let own = this.#own.get(enterprise);
      if (own === undefined) this.#own.set(enterprise, (own = new Map()));
      own.set(socket, filters);
    } else if (filters.batch === true) {
      topics.push(batchTopic(enterprise));
    } else if (filters.severity !== undefined) {
      for (const s of filters.severity) topics.push(severityTopic(enterprise, s));
    } else {
      topics.push(alertTopic(enterprise));
    }
    return topics;
  }

  leave(socket: S, enterprise: string): void {
    const own = this.#own.get(enterprise);
    if (own?.delete(socket) === true && own.size === 0) this.#own.delete(enterprise);
  }

  /**
   * The alerts of one NATS message, each to its enterprise's sockets: one `alert` message per
   * alert, and for `batch=1` sockets one `alerts` message per enterprise.
   */
  alerts(alerts: readonly Alert[]): FanoutCounts {
    const hub = this.#hub;
    const counts: FanoutCounts = { alert: 0, alerts: 0 };
    const byEnterprise = new Map<string, LiveAlert[]>();
    for (const alert of alerts) {
      const a = alertView(alert);
      const enterprise = alert.enterprise_id;
      let views = byEnterprise.get(enterprise);
      if (views === undefined) byEnterprise.set(enterprise, (views = []));
      views.push(a);
      const msg = JSON.stringify({ type: 'alert', ...a } satisfies AlertMessage);
      counts.alert += this.#publish(alertTopic(enterprise), msg) + this.#publish(severityTopic(enterprise, a.severity), msg);
      for (const [socket, f] of this.#own.get(enterprise) ?? []) {
        if (f.batch === true || !matches(f, a)) continue;
        hub.send(socket, msg);
        counts.alert++;
      }
    }
    for (const [enterprise, views] of byEnterprise) {
      const topic = batchTopic(enterprise);
      const subscribers = hub.numSubscribers(topic);
      if (subscribers > 0) hub.publish(topic, alertsMessage(views));
      counts.alerts += subscribers;
      for (const [socket, f] of this.#own.get(enterprise) ?? []) {
        if (f.batch !== true) continue;
        const mine = views.filter((a) => matches(f, a));
        if (mine.length === 0) continue;
        hub.send(socket, alertsMessage(mine));
        counts.alerts++;
      }
    }
    return counts;
  }

  /** A typed message to every socket of an enterprise, whatever its filters; returns how many get it. */
  toEnterprise(enterprise: string, message: string): number {
    return this.#publish(enterpriseTopic(enterprise), message);
  }

  /** Publishes to a topic that has subscribers; returns how many. */
  #publish(topic: string, message: string): number {
    const n = this.#hub.numSubscribers(topic);
    if (n > 0) this.#hub.publish(topic, message);
    return n;
  }
}

function alertsMessage(alerts: LiveAlert[]): string {
  return JSON.stringify({ type: 'alerts', alerts } satisfies AlertsMessage);
}

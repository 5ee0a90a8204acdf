/** What route handlers are given: the connections and services of one api process. */
import type { JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { ClickHouseHandle } from '../core/clickhouse/index.js';
import type { ControlPlaneStore, ControlPlaneView } from '../core/controlPlane/index.js';
import type { AuthService, Principal } from './auth.js';
import { routeFor, type AnyRoute } from './http.js';
import type { RateLimits } from './limits.js';
import type { RecentIds } from './recentIds.js';
import type { LogLine } from '../core/log.js';
import type { PolicyVersions } from './policyVersions.js';

export interface ApiContext {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly view: ControlPlaneView;
  readonly store: ControlPlaneStore;
  readonly clickhouse: ClickHouseHandle;
  readonly auth: AuthService;
  readonly limits: RateLimits;
  /** Records policy versions and credits their authors. */
  readonly versions: PolicyVersions;
  /** How long a /dashboard/metrics answer is shared by identical requests (0: never). */
  readonly metricsCacheMs: number;
  /** How long a /dashboard/alerts page is shared by identical requests (0: never). */
  readonly alertsCacheMs: number;
  /** Alerts this node has seen from the pipeline, as `<enterprise>|<alert_id>` (their rows may still be on the way). */
  readonly recentAlerts: RecentIds;
  /** Epoch ms. */
  now(): number;
  readonly log: LogLine;
}

/** A route of this api, as `route()` made it. */
export type ApiRoute = AnyRoute<Principal>;

/**
 * Declares a route of this api: its handler's query and body are typed as its schemas parse
 * them, its principal as the authenticated one (null on a public route).
 */
export const route = routeFor<Principal>();

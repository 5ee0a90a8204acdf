/** What route handlers are given: the connections and services of one api process. */
import type { JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { ClickHouseHandle } from '../core/clickhouse.js';
import type { ControlPlaneStore, ControlPlaneView } from '../core/controlPlane/index.js';
import type { AuthService, Principal } from './auth.js';
import type { Route } from './http.js';
import type { RateLimits } from './limits.js';

export interface ApiContext {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly view: ControlPlaneView;
  readonly store: ControlPlaneStore;
  readonly clickhouse: ClickHouseHandle;
  readonly auth: AuthService;
  readonly limits: RateLimits;
  /** How long a /dashboard/metrics answer is shared by identical requests (0: never). */
  readonly metricsCacheMs: number;
  /** Epoch ms. */
  now(): number;
  log(line: string): void;
}

/** A route of this api: handlers get the authenticated principal (null on public routes). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type ApiRoute = Route<any, any, Principal>;

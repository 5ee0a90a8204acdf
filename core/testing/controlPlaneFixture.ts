/**
 * Test helper: a connection to the file's nats-server with every stream in place and a
 * control-plane store over it, seeded by the caller (core cannot import the fixtures' seeders).
 *
 * ```ts
 * const nats = await withNats();
 * before(async () => ({ nc, js, store } = await connectControlPlane(nats, (s) => seedWorld(s, world))));
 * ```
 */
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { ControlPlaneStore } from '../controlPlane/index.js';
import { ensureStreams } from '../nats/index.js';
import type { NatsFixture } from './natsFixture.js';

export interface ControlPlaneConnection {
  /** Closed by the NATS fixture at teardown. */
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly store: ControlPlaneStore;
}

export async function connectControlPlane(nats: NatsFixture, seed: (store: ControlPlaneStore) => Promise<unknown>): Promise<ControlPlaneConnection> {
  const nc = await nats.connect();
  await ensureStreams(nc);
  const store = await ControlPlaneStore.open(nc);
  await seed(store);
  return { nc, js: jetstream(nc), store };
}

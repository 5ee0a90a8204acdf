/**
 * KV buckets as towerwatch opens them: created with the configured replicas, or raised to
 * them when they exist with fewer (never lowered), and the compare-and-set conflict every
 * optimistic writer checks for.
 */
import { jetstream, JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import { type KV, type KvEntry, Kvm, type KvOptions } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { explainReplicas, kvStreamName, raiseReplicas } from './streams.js';

export interface OpenKvOptions extends Partial<KvOptions> {
  /** Least replicas: an existing bucket with fewer is raised, never lowered. @default 1 */
  replicas?: number;
  /** Timeout of the bucket's requests (ms); absent: the client's default. */
  timeoutMs?: number;
}

/**
 * Opens KV bucket `bucket`, creating it with `options` if missing (an existing one keeps its
 * settings, apart from fewer replicas than asked, which are raised).
 * @throws {ReplicasUnavailableError} when the cluster has too few servers for the replicas;
 *   other errors as the client throws them
 */
export async function openKvBucket(nc: NatsConnection, bucket: string, options: OpenKvOptions = {}): Promise<KV> {
  const { timeoutMs, ...config } = options;
  const replicas = config.replicas ?? 1;
  const kvm = new Kvm(timeoutMs === undefined ? nc : jetstream(nc, { timeout: timeoutMs }));
  const kv = await kvm.create(bucket, { ...config, replicas }).catch((err: unknown) => {
    throw explainReplicas(kvStreamName(bucket), replicas, err);
  });
  if (replicas > 1) await raiseReplicas(nc, kvStreamName(bucket), replicas);
  return kv;
}

/** A compare-and-set write that lost: the key changed (or was created) since the revision named. */
export function isWrongLastSequence(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

/** The values of the keys matching `filter` (JSON, or as `read` reads them), in key order; deleted keys left out. */
export async function kvValues<T>(kv: KV, filter: string, read: (entry: KvEntry) => T = (e) => e.json<T>()): Promise<T[]> {
  const keys: string[] = [];
  for await (const key of await kv.keys(filter)) keys.push(key);
  const out: T[] = [];
  for (const key of keys.sort()) {
    const entry = await kv.get(key);
    if (entry?.operation === 'PUT') out.push(read(entry));
  }
  return out;
}

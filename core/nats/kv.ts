/**
 * KV buckets as towerwatch opens them: created with the configured replicas, or raised to
 * them when they exist with fewer (never lowered), read from the stream leader, and the
 * compare-and-set conflict every optimistic writer checks for.
 */
import { jetstream, JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import { type KV, type KvEntry, Kvm, type KvOptions } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { retryFor } from '../retry.js';
import { isTransientNatsError } from './retry.js';
import { explainReplicas, kvStreamName, raiseReplicas, ReplicasUnavailableError } from './streams.js';

/** How long an open rides out a broker away or a bucket another node is creating. */
export const DEFAULT_KV_OPEN_RETRY_MS = 30_000;

export interface OpenKvOptions extends Partial<KvOptions> {
  /** Least replicas: an existing bucket with fewer is raised, never lowered. @default 1 */
  replicas?: number;
  /** Timeout of the bucket's requests (ms); absent: the client's default. */
  timeoutMs?: number;
  /**
   * How long to retry the open through transient failures (ms). Creating a replicated bucket
   * that another process is creating at the same moment times out often (nats-server 2.9:
   * the losers' requests go unanswered while its group elects a leader). Callers that answer
   * requests pass 0 and open again later ({@link reopening}). @default DEFAULT_KV_OPEN_RETRY_MS
   */
  retryForMs?: number;
}

/**
 * Opens KV bucket `bucket`, creating it with `options` if missing (an existing one keeps its
 * settings, apart from fewer replicas than asked, which are raised).
 *
 * Every bucket is read from its stream's leader (`allow_direct: false`, unless the caller
 * asks). Direct gets of a replicated bucket are answered by any replica, and nats-server
 * before 2.12 gives them no read-after-write: on 3 servers, 39 of 2,000 reads of a key just
 * written by another client saw the value before (and a key just created was missing), so a
 * refresh token just rotated looked reused and a signing key just created was not there.
 * Through the leader: none of 2,000. On one server the two cost the same (~0.1 ms a get), so
 * a bucket raised to 3 replicas later needs no other reader.
 * @throws {ReplicasUnavailableError} when the cluster has too few servers for the replicas;
 *   other errors as the client throws them
 */
export async function openKvBucket(nc: NatsConnection, bucket: string, options: OpenKvOptions = {}): Promise<KV> {
  const { retryForMs = DEFAULT_KV_OPEN_RETRY_MS, ...rest } = options;
  if (retryForMs <= 0) return openOnce(nc, bucket, rest);
  return retryFor(`opening KV bucket ${bucket}`, () => openOnce(nc, bucket, rest), {
    budgetMs: retryForMs,
    retryable: (err) => isTransientNatsError(err) && !(err instanceof ReplicasUnavailableError),
  });
}

async function openOnce(nc: NatsConnection, bucket: string, options: Omit<OpenKvOptions, 'retryForMs'>): Promise<KV> {
  const { timeoutMs, ...config } = options;
  const replicas = config.replicas ?? 1;
  const kvm = new Kvm(timeoutMs === undefined ? nc : jetstream(nc, { timeout: timeoutMs }));
  const kv = await kvm.create(bucket, { allow_direct: false, ...config, replicas }).catch((err: unknown) => {
    throw explainReplicas(kvStreamName(bucket), replicas, err);
  });
  if (replicas > 1) await raiseReplicas(nc, kvStreamName(bucket), replicas);
  return kv;
}

/**
 * A bucket opened on first call and opened again on the call after a failure: a broker away
 * at start-up costs the calls of that moment, not the rest of the process's life. Calls made
 * while an open is under way share it.
 */
export function reopening(open: () => Promise<KV>): () => Promise<KV> {
  let current: Promise<KV> | null = null;
  return () => {
    if (current === null) {
      const attempt = open();
      current = attempt;
      attempt.catch(() => {
        if (current === attempt) current = null;
      });
    }
    return current;
  };
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

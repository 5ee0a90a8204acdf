/**
 * The JetStream streams of towerwatch, their subjects and limits, and `ensureStreams()` which
 * makes a server match them (create, or update when the config differs). Replicas are only
 * ever raised: a stream or KV bucket someone made R3 stays R3 whatever a later start asks
 * ({@link raiseReplicas}).
 */
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  jetstreamManager,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type ConsumerConfig,
  type JetStreamManager,
  type StreamConfig,
  type StreamInfo,
} from '@nats-io/jetstream';
import { headers, nanos, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node';
import { headerReasons, type DeadLetterSummary } from '../deadLetters.js';
import { ID_PATTERN } from '../domain.js';

export const USAGE_STREAM = 'USAGE';
export const DISCOVERY_STREAM = 'DISCOVERY';
export const USAGE_DLQ_STREAM = 'USAGE_DLQ';
export const REMEDIATION_STREAM = 'REMEDIATION';
export const DISCOVERY_DLQ_STREAM = 'DISCOVERY_DLQ';
export const STREAM_NAMES = [USAGE_STREAM, DISCOVERY_STREAM, USAGE_DLQ_STREAM, REMEDIATION_STREAM, DISCOVERY_DLQ_STREAM] as const;
export type StreamName = (typeof STREAM_NAMES)[number];

const MINUTE_MS = 60_000;
const HOUR_MS = 60 * MINUTE_MS;
const DAY_MS = 24 * HOUR_MS;
const MIB = 1024 ** 2;
const GIB = 1024 ** 3;

/** Window in which a repeated `Nats-Msg-Id` is dropped as a duplicate (tower retries). */
export const DUPLICATE_WINDOW_MS = 2 * MINUTE_MS;

export interface StreamLimits {
  readonly name: StreamName;
  readonly subjects: readonly string[];
  readonly description: string;
  readonly retention: 'limits' | 'workqueue';
  readonly storage: 'file';
  readonly maxAgeMs: number;
  readonly maxBytes: number;
  readonly duplicateWindowMs: number;
  /** What happens when full: drop the oldest message, or refuse new ones. */
  readonly discard: 'old' | 'new';
  /** Why these limits, for the docs. */
  readonly why: string;
}

/**
 * Limits of every stream. ClickHouse keeps the history; the streams are buffers that let
 * consumers catch up after an outage, so they keep a day or a week, not the retention period.
 */
export const STREAM_LIMITS: Readonly<Record<StreamName, StreamLimits>> = Object.freeze({
  USAGE: {
    name: USAGE_STREAM,
    subjects: ['usage.>'],
    description: 'Usage frames from towers: usage.<carrier>.<tower>',
    retention: 'limits',
    storage: 'file',
    maxAgeMs: DAY_MS,
    maxBytes: 4 * GIB,
    duplicateWindowMs: DUPLICATE_WINDOW_MS,
    discard: 'old',
    why: 'A day of frames lets the pipeline recover from an outage. Limits retention (not work queue) so tools can read the stream beside the pipeline consumer; discard old so a full stream never stops the towers.',
  },
  DISCOVERY: {
    name: DISCOVERY_STREAM,
    subjects: ['discovery.>'],
    description: 'Device discovery reports: discovery.<carrier>.<tower>',
    retention: 'limits',
    storage: 'file',
    maxAgeMs: 7 * DAY_MS,
    maxBytes: 1 * GIB,
    duplicateWindowMs: DUPLICATE_WINDOW_MS,
    discard: 'old',
    why: 'Low volume; a week lets a rebuilt device registry replay recent sightings.',
  },
  USAGE_DLQ: {
    name: USAGE_DLQ_STREAM,
    subjects: ['dlq.usage.>'],
    description: 'Usage frames that could not be decoded, with the reason: dlq.usage.<carrier>.<tower>',
    retention: 'limits',
    storage: 'file',
    maxAgeMs: 30 * DAY_MS,
    maxBytes: 1 * GIB,
    duplicateWindowMs: DUPLICATE_WINDOW_MS,
    discard: 'old',
    why: 'Kept a month for investigation; bounded so a broken tower cannot fill the disk.',
  },
  DISCOVERY_DLQ: {
    name: DISCOVERY_DLQ_STREAM,
    subjects: ['dlq.discovery.>'],
    description: 'Discovery messages that could not be decoded, with the reason: dlq.discovery.<carrier>.<tower>',
    retention: 'limits',
    storage: 'file',
    maxAgeMs: 30 * DAY_MS,
    maxBytes: 256 * MIB,
    duplicateWindowMs: DUPLICATE_WINDOW_MS,
    discard: 'old',
    why: 'As USAGE_DLQ, for the (much smaller) discovery traffic.',
  },
  REMEDIATION: {
    name: REMEDIATION_STREAM,
    subjects: ['remediation.>'],
    description: 'Remediation commands due, one consumer (remediator): remediation.<enterprise>.<tower>',
    retention: 'workqueue',
    storage: 'file',
    maxAgeMs: DAY_MS,
    maxBytes: 256 * MIB,
    duplicateWindowMs: DUPLICATE_WINDOW_MS,
    discard: 'new',
    why: 'Work queue: a command is removed once the remediator acks it. Discard new so that a full queue is an error to the publisher rather than a silently dropped command; a day-old command is stale.',
  },
});

function token(what: string, value: string): string {
  // Dots or wildcards in a token would publish to (or match) other subjects.
  if (!ID_PATTERN.test(value)) throw new TypeError(`${what} must match ${String(ID_PATTERN)}, got '${value}'`);
  return value;
}

/** `usage.<carrier>.<tower>` */
export function usageSubject(carrier: string, tower: string): string {
  return `usage.${token('carrier', carrier)}.${token('tower', tower)}`;
}

/** `discovery.<carrier>.<tower>` */
export function discoverySubject(carrier: string, tower: string): string {
  return `discovery.${token('carrier', carrier)}.${token('tower', tower)}`;
}

/** `dlq.usage.<carrier>.<tower>`: where an undecodable frame from that tower goes. */
export function usageDlqSubject(carrier: string, tower: string): string {
  return `dlq.usage.${token('carrier', carrier)}.${token('tower', tower)}`;
}

/**
 * Headers of a dead letter (docs/wire-format.md): why, and where the message came from. Small
 * whatever the number of rejections: the first few reasons, the total and a count per code.
 */
export function deadLetterHeaders(subject: string, seq: number, summary: DeadLetterSummary): MsgHdrs {
  const h = headers();
  h.set('Towerwatch-Reason', summary.reasons[0]?.code ?? 'unknown');
  h.set('Towerwatch-Rejections', JSON.stringify(headerReasons(summary).map((x) => ({ index: x.index, code: x.code, message: x.message }))));
  h.set('Towerwatch-Rejected-Count', String(summary.total));
  h.set('Towerwatch-Reason-Counts', JSON.stringify(summary.codes));
  h.set('Towerwatch-Original-Subject', subject);
  h.set('Towerwatch-Stream-Seq', String(seq));
  return h;
}

/** `remediation.<enterprise>.<tower>` */
export function remediationSubject(enterprise: string, tower: string): string {
  return `remediation.${token('enterprise', enterprise)}.${token('tower', tower)}`;
}

/** `tower.<tower>.commands`: core NATS request/reply to a tower (docs/wire-format.md). */
export function towerCommandSubject(tower: string): string {
  return `tower.${token('tower', tower)}.commands`;
}

export interface EnsureStreamsOptions {
  /**
   * Least replicas per stream: 1 for one server, 3 or 5 in a cluster. A stream that has more
   * keeps them. @default 1
   */
  replicas?: number;
}

export interface EnsureStreamResult {
  name: StreamName;
  action: 'created' | 'updated' | 'unchanged';
  /** Replicas the stream has now (more than asked when it had more before). */
  replicas: number;
}

/** The server-side config for `limits`. */
export function streamConfig(limits: StreamLimits, replicas = 1): StreamConfig {
  return {
    name: limits.name,
    subjects: [...limits.subjects],
    description: limits.description,
    retention: limits.retention === 'workqueue' ? RetentionPolicy.Workqueue : RetentionPolicy.Limits,
    storage: StorageType.File,
    max_age: nanos(limits.maxAgeMs),
    max_bytes: limits.maxBytes,
    duplicate_window: nanos(limits.duplicateWindowMs),
    discard: limits.discard === 'new' ? DiscardPolicy.New : DiscardPolicy.Old,
    num_replicas: replicas,
  } as StreamConfig; // the server fills in every other field with its default
}

/** The fields we manage, in a form comparable between what we want and what the server has. */
function managed(c: Partial<StreamConfig>) {
  return {
    subjects: [...(c.subjects ?? [])].sort().join(','),
    description: c.description ?? '',
    retention: c.retention,
    storage: c.storage,
    max_age: c.max_age,
    max_bytes: c.max_bytes,
    duplicate_window: c.duplicate_window,
    discard: c.discard,
    num_replicas: c.num_replicas,
  };
}

function differs(want: StreamConfig, have: StreamConfig): boolean {
  const a = managed(want);
  const b = managed(have);
  return (Object.keys(a) as (keyof typeof a)[]).some((k) => a[k] !== b[k]);
}

const STREAM_NOT_FOUND = 10059;
const STREAM_NAME_IN_USE = 10058;
const INSUFFICIENT_RESOURCES = 10047;
/** "replicas > 1 not supported in non-clustered mode" */
const REPLICAS_NOT_SUPPORTED = 10074;
/** "insufficient resources" / "no suitable peers for placement" (fewer servers than replicas). */
const NO_SUITABLE_PEERS = 10005;

/** Thrown when a stream or bucket cannot get the replicas asked for; says why and what to do. */
export class ReplicasUnavailableError extends Error {
  override readonly name = 'ReplicasUnavailableError';
}

function isReplicaRefusal(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === REPLICAS_NOT_SUPPORTED || err.code === NO_SUITABLE_PEERS || /replicas|suitable peers|non-clustered/i.test(err.message))
  );
}

/**
 * A server outside any cluster refuses a new stream with replicas but takes them on an update
 * of an existing one, and then reports them: a silent R1. Refused here instead.
 */
function refuseUnclustered(info: StreamInfo, want: number): void {
  if (info.cluster === undefined)
    throw replicaError(info.config.name, info.config.num_replicas, want, new Error('this server is not part of a JetStream cluster'));
}

function replicaError(stream: string, have: number | null, want: number, err: unknown): ReplicasUnavailableError {
  const now = have === null ? 'cannot be created' : `has ${have} replica${have === 1 ? '' : 's'} and cannot get more`;
  return new ReplicasUnavailableError(
    `stream ${stream} ${now} with ${want} replicas: that needs a JetStream cluster of at least ${want} servers ` +
      `(the server says: ${err instanceof Error ? err.message : String(err)}); lower TOWERWATCH_NATS_REPLICAS or add servers`,
    { cause: err },
  );
}

/**
 * `err` of creating or updating `stream` with `want` replicas, as a {@link ReplicasUnavailableError}
 * when the server refused for want of servers; other errors as they are.
 */
export function explainReplicas(stream: string, want: number, err: unknown): unknown {
  return want > 1 && isReplicaRefusal(err) ? replicaError(stream, null, want, err) : err;
}

/** nats-server reserves each stream's max_bytes up front; name the knob when it does not fit. */
function explain(err: unknown, want: StreamConfig): unknown {
  if (isReplicaRefusal(err)) return replicaError(want.name, null, want.num_replicas, err);
  if (err instanceof JetStreamApiError && err.code === INSUFFICIENT_RESOURCES) {
    return new Error(
      `stream ${want.name} needs ${want.max_bytes} bytes of JetStream file storage reserved, more than the server has left: ` +
        `raise jetstream.max_file_store on the server (all towerwatch streams together: ${totalMaxBytes()} bytes)`,
      { cause: err },
    );
  }
  return err;
}

/** Sum of max_bytes over all streams: what the server must be able to reserve. */
export function totalMaxBytes(): number {
  return STREAM_NAMES.reduce((sum, n) => sum + STREAM_LIMITS[n].maxBytes, 0);
}

async function streamInfo(jsm: JetStreamManager, name: string): Promise<StreamInfo | null> {
  try {
    return await jsm.streams.info(name);
  } catch (err) {
    if (err instanceof JetStreamApiError && err.code === STREAM_NOT_FOUND) return null;
    throw err;
  }
}

async function ensureStream(jsm: JetStreamManager, asked: StreamConfig): Promise<Omit<EnsureStreamResult, 'name'>> {
  const info = await streamInfo(jsm, asked.name);
  if (info === null) {
    try {
      await jsm.streams.add(asked);
      return { action: 'created', replicas: asked.num_replicas };
    } catch (err) {
      // Another process created it first (with other settings): fall through to update.
      if (!(err instanceof JetStreamApiError && err.code === STREAM_NAME_IN_USE)) throw explain(err, asked);
      return ensureStream(jsm, asked);
    }
  }
  // Never fewer replicas than it has: an operator's (or a cluster-wide start's) R3 stays.
  const have = info.config.num_replicas;
  const want = have > asked.num_replicas ? { ...asked, num_replicas: have } : asked;
  if (!differs(want, info.config)) return { action: 'unchanged', replicas: want.num_replicas };
  if (want.num_replicas > have) refuseUnclustered(info, want.num_replicas);
  try {
    await jsm.streams.update(want.name, want);
  } catch (err) {
    if (want.num_replicas > have && isReplicaRefusal(err)) throw replicaError(want.name, have, want.num_replicas, err);
    if (err instanceof JetStreamApiError && err.code === INSUFFICIENT_RESOURCES) throw explain(err, want);
    // Retention and storage cannot change on a live stream; say what to do.
    throw new Error(
      `stream ${want.name} exists with a different config that cannot be updated (${err instanceof Error ? err.message : String(err)}); ` +
        `delete it or migrate its messages`,
      { cause: err },
    );
  }
  return { action: 'updated', replicas: want.num_replicas };
}

function checkReplicas(replicas: number | undefined): number {
  const r = replicas ?? 1;
  if (!Number.isInteger(r) || r < 1 || r > 5) throw new RangeError(`replicas must be an integer 1–5, got ${String(replicas)}`);
  return r;
}

/** Creates or updates every towerwatch stream. Safe to call from every process at start-up. */
export async function ensureStreams(nc: NatsConnection | JetStreamManager, options: EnsureStreamsOptions = {}): Promise<EnsureStreamResult[]> {
  const replicas = checkReplicas(options.replicas);
  const jsm = 'streams' in nc ? nc : await jetstreamManager(nc);
  const results: EnsureStreamResult[] = [];
  for (const name of STREAM_NAMES) {
    results.push({ name, ...(await ensureStream(jsm, streamConfig(STREAM_LIMITS[name], replicas))) });
  }
  return results;
}

/** The stream behind KV bucket `bucket`. */
export const kvStreamName = (bucket: string): string => `KV_${bucket}`;

/**
 * Gives an existing stream (a KV bucket's: {@link kvStreamName}) at least `replicas`; never
 * fewer than it has. Returns the count it has afterwards.
 * @throws {ReplicasUnavailableError} when the cluster has too few servers for it
 */
export async function raiseReplicas(nc: NatsConnection | JetStreamManager, stream: string, replicas: number): Promise<number> {
  const want = checkReplicas(replicas);
  const jsm = 'streams' in nc ? nc : await jetstreamManager(nc);
  const info = await jsm.streams.info(stream);
  const { config } = info;
  if (config.num_replicas >= want) return config.num_replicas;
  refuseUnclustered(info, want);
  try {
    await jsm.streams.update(stream, { ...config, num_replicas: want });
  } catch (err) {
    throw isReplicaRefusal(err) ? replicaError(stream, config.num_replicas, want, err) : err;
  }
  return want;
}

export interface DurableConsumerOptions {
  /** How long a delivered message waits for its ack before redelivery (ms). */
  ackWaitMs: number;
  maxAckPending: number;
}

/**
 * The durable pull consumer `name` on `stream` (explicit acks, every message, redelivered
 * without limit: the workers, not the server, decide when a message has failed for good),
 * created when missing. An existing one is kept as it is (its ack_wait may predate these
 * options): its config is returned so the caller can pace itself on it.
 */
export async function ensureConsumer(nc: NatsConnection, stream: string, name: string, options: DurableConsumerOptions): Promise<ConsumerConfig> {
  const jsm = await jetstreamManager(nc);
  try {
    return (await jsm.consumers.info(stream, name)).config;
  } catch {
    return (
      await jsm.consumers.add(stream, {
        durable_name: name,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: nanos(options.ackWaitMs),
        max_ack_pending: options.maxAckPending,
        max_deliver: -1,
      })
    ).config;
  }
}

/**
 * The JetStream streams of towerwatch, their subjects and limits, and `ensureStreams()` which
 * makes a server match them (create, or update when the config differs).
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
  /** Replicas per stream: 1 for one server, 3 in a cluster. @default 1 */
  replicas?: number;
}

export interface EnsureStreamResult {
  name: StreamName;
  action: 'created' | 'updated' | 'unchanged';
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

/** nats-server reserves each stream's max_bytes up front; name the knob when it does not fit. */
function explain(err: unknown, want: StreamConfig): unknown {
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

async function ensureStream(jsm: JetStreamManager, want: StreamConfig): Promise<EnsureStreamResult['action']> {
  const info = await streamInfo(jsm, want.name);
  if (info === null) {
    try {
      await jsm.streams.add(want);
      return 'created';
    } catch (err) {
      // Another process created it first (with other settings): fall through to update.
      if (!(err instanceof JetStreamApiError && err.code === STREAM_NAME_IN_USE)) throw explain(err, want);
      return ensureStream(jsm, want);
    }
  }
  if (!differs(want, info.config)) return 'unchanged';
  try {
    await jsm.streams.update(want.name, want);
  } catch (err) {
    if (err instanceof JetStreamApiError && err.code === INSUFFICIENT_RESOURCES) throw explain(err, want);
    // Retention and storage cannot change on a live stream; say what to do.
    throw new Error(
      `stream ${want.name} exists with a different config that cannot be updated (${err instanceof Error ? err.message : String(err)}); ` +
        `delete it or migrate its messages`,
      { cause: err },
    );
  }
  return 'updated';
}

/** Creates or updates every towerwatch stream. Safe to call from every process at start-up. */
export async function ensureStreams(nc: NatsConnection | JetStreamManager, options: EnsureStreamsOptions = {}): Promise<EnsureStreamResult[]> {
  const replicas = options.replicas ?? 1;
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5) {
    throw new RangeError(`options.replicas must be an integer 1–5, got ${String(options.replicas)}`);
  }
  const jsm = 'streams' in nc ? nc : await jetstreamManager(nc);
  const results: EnsureStreamResult[] = [];
  for (const name of STREAM_NAMES) {
    results.push({ name, action: await ensureStream(jsm, streamConfig(STREAM_LIMITS[name], replicas)) });
  }
  return results;
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

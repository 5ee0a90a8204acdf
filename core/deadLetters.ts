/**
 * Dead letters: what the pipeline and the discovery worker record about a message they could
 * not (fully) process. Bounded by design: one dead letter per message, whatever number of
 * its events were rejected: the payload is stored once (and at most
 * {@link DEAD_LETTER_MAX_PAYLOAD_BYTES} of it), the first {@link DEAD_LETTER_MAX_REASONS}
 * reasons are kept with the total and a count per code, and the DLQ stream's headers carry
 * only a short summary ({@link DEAD_LETTER_HEADER_REASONS} reasons).
 *
 * Besides the wire codes of core/wire.ts (DECODE_ERROR), these codes come from the consumers:
 * see {@link REJECTION} and docs/wire-format.md.
 */
import type { DeadLetterRow } from './clickhouse/index.js';
import { ID_PATTERN } from './domain.js';

/** Rejection codes decided by the consumers rather than the codec. */
export const REJECTION = {
  /** The subject is not `<kind>.<carrier>.<tower>` with two ids (scope: message). */
  badSubject: 'bad_subject',
  /** The payload's carrier or tower differs from the subject's (scope: message). */
  subjectMismatch: 'subject_mismatch',
  /** A second event with an `event_id` already seen in the same frame (scope: event). */
  duplicateEventId: 'duplicate_event_id',
  /** Processing the message failed (a worker threw or died) on its last allowed delivery (scope: message). */
  processingFailed: 'processing_failed',
} as const;
export type RejectionCode = (typeof REJECTION)[keyof typeof REJECTION];

/** Reasons kept per dead-lettered message (the rest are counted). */
export const DEAD_LETTER_MAX_REASONS = 100;
/** Payload bytes kept in `dead_letters` (the DLQ stream keeps the whole message). */
export const DEAD_LETTER_MAX_PAYLOAD_BYTES = 1024 * 1024;
/** Longest reason message kept. */
export const DEAD_LETTER_MAX_MESSAGE_CHARS = 300;
/** Reasons listed in the DLQ stream's `Towerwatch-Rejections` header. */
export const DEAD_LETTER_HEADER_REASONS = 5;
/** Longest reason message in a header. */
const HEADER_MESSAGE_CHARS = 200;

export interface DeadLetterReason {
  /** Event (report) index in the frame; -1 for the whole message. */
  index: number;
  code: string;
  message: string;
  event_id?: number;
}

/** The reasons of one dead-lettered message, bounded. */
export interface DeadLetterSummary {
  /** The first {@link DEAD_LETTER_MAX_REASONS} reasons, in the order found. */
  reasons: DeadLetterReason[];
  /** All reasons, counted. */
  total: number;
  /** Reasons per code, counted over all of them. */
  codes: Record<string, number>;
}

export function emptySummary(): DeadLetterSummary {
  return { reasons: [], total: 0, codes: {} };
}

const clip = (text: string, max: number): string => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/** Counts a reason; keeps it (its message clipped) while fewer than the cap are kept. */
export function addReason(s: DeadLetterSummary, r: DeadLetterReason): void {
  s.total++;
  s.codes[r.code] = (s.codes[r.code] ?? 0) + 1;
  if (s.reasons.length < DEAD_LETTER_MAX_REASONS) {
    const kept: DeadLetterReason = { index: r.index, code: r.code, message: clip(r.message, DEAD_LETTER_MAX_MESSAGE_CHARS) };
    if (r.event_id !== undefined) kept.event_id = r.event_id;
    s.reasons.push(kept);
  }
}

export function summaryOf(reasons: readonly DeadLetterReason[]): DeadLetterSummary {
  const s = emptySummary();
  for (const r of reasons) addReason(s, r);
  return s;
}

/** The one `dead_letters` row of a message (payload base64, capped). */
export function deadLetterRow(stream: string, subject: string, seq: number, summary: DeadLetterSummary, payload: Uint8Array, now = Date.now()): DeadLetterRow {
  const first = summary.reasons[0];
  const kept = payload.length > DEAD_LETTER_MAX_PAYLOAD_BYTES ? payload.subarray(0, DEAD_LETTER_MAX_PAYLOAD_BYTES) : payload;
  return {
    ts: now,
    stream,
    subject,
    stream_seq: seq,
    code: first?.code ?? 'unknown',
    message: first?.message ?? '',
    event_index: first?.index ?? -1,
    payload_base64: Buffer.from(kept.buffer, kept.byteOffset, kept.byteLength).toString('base64'),
    rejected_count: summary.total,
    rejections: JSON.stringify(summary.reasons),
    payload_bytes: payload.length,
    payload_truncated: kept.length < payload.length,
  };
}

/** The small summary the DLQ stream's headers carry: the first few reasons (messages clipped). */
export function headerReasons(summary: DeadLetterSummary): DeadLetterReason[] {
  return summary.reasons.slice(0, DEAD_LETTER_HEADER_REASONS).map((r) => ({ ...r, message: clip(r.message, HEADER_MESSAGE_CHARS) }));
}

/**
 * The subject is the truth about who sent a message (per-carrier NATS permissions apply to
 * subjects): null when `carrier`/`tower` from the payload match `<kind>.<carrier>.<tower>`,
 * else the reason. Pass `carrier` undefined to check the subject's form only.
 */
export function checkSubject(kind: 'usage' | 'discovery', subject: string, carrier?: string, tower?: string): DeadLetterReason | null {
  const parts = subject.split('.');
  if (parts.length !== 3 || parts[0] !== kind || !ID_PATTERN.test(parts[1] as string) || !ID_PATTERN.test(parts[2] as string)) {
    return { index: -1, code: REJECTION.badSubject, message: `subject ${JSON.stringify(clip(subject, 200))} is not ${kind}.<carrier>.<tower>` };
  }
  if (carrier === undefined) return null;
  if (parts[1] !== carrier || parts[2] !== tower) {
    return {
      index: -1,
      code: REJECTION.subjectMismatch,
      message: `the payload says carrier ${JSON.stringify(carrier)}, tower ${JSON.stringify(tower)} but it came on ${subject}: the subject's carrier and tower must match`,
    };
  }
  return null;
}

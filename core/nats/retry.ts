/**
 * What a NATS failure means for a retry, and JetStream publishes that ride out a broker restart
 * or a leader election ({@link retryFor} by elapsed time).
 */
import type { JetStreamClient, JetStreamPublishOptions, PubAck } from '@nats-io/jetstream';
import { retryFor, type RetryOptions } from '../retry.js';

/** Errors of a broker that is away for now: no answer, no JetStream leader, a dropped connection. */
const TRANSIENT = new Set(['TimeoutError', 'NoRespondersError', 'RequestError', 'JetStreamNotEnabled', 'ConnectionError']);
/** Errors no retry can mend: our own connection is closed, or the request itself is wrong. */
const PERMANENT = new Set([
  'ClosedConnectionError',
  'DrainingConnectionError',
  'InvalidSubjectError',
  'InvalidArgumentError',
  'PermissionViolationError',
  'AuthorizationError',
  'UserAuthenticationExpiredError',
]);

/**
 * True when the same call may well succeed in a few seconds. Judged by error name, not
 * `instanceof`: a second copy of a nats.js package in node_modules would defeat the latter.
 */
export function isTransientNatsError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (PERMANENT.has(err.name)) return false;
  if (TRANSIENT.has(err.name)) return true;
  if (err.name === 'JetStreamApiError' || err.name === 'JetStreamStatusError') {
    // 503: "JetStream system temporarily unavailable", no leader during an election.
    const status = (err as { status?: unknown; code?: unknown }).status ?? (err as { code?: unknown }).code;
    return status === 503 || /temporarily unavailable|no suitable peers|leader/i.test(err.message);
  }
  return /timeout|no responders|disconnect|reconnect|connection (refused|reset|lost)/i.test(err.message);
}

/**
 * `js.publish` retried through transient failures for `budgetMs` (carry a `msgID`: a publish
 * whose ack was lost is then stored once, not twice).
 */
export function publishWithRetry(
  js: JetStreamClient,
  subject: string,
  data: Uint8Array | string,
  options: Partial<JetStreamPublishOptions>,
  retry: Omit<RetryOptions, 'retryable'> = {},
): Promise<PubAck> {
  return retryFor(`publish to ${subject}`, () => js.publish(subject, data, options), { ...retry, retryable: isTransientNatsError });
}

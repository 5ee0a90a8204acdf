/**
 * The pipeline → api contract on core NATS (docs/wire-format.md, "What towerwatch publishes"):
 * violations on `alerts.<enterprise>` (msgpack) and dashboard events on `events.<enterprise>`
 * (JSON): the subjects, and the codec of what travels on them. Decoding checks the shape: a
 * malformed message from NATS is refused with a reason, never handed on as if it were an alert.
 * What the socket then sends to pages is in liveMessages.ts (browser-safe, no Node imports).
 */
import { Packr, Unpackr } from 'msgpackr';
import type { Alert, EnterpriseEvent } from './liveMessages.js';

export type * from './liveMessages.js';

const ALERTS_PREFIX = 'alerts.';
const EVENTS_PREFIX = 'events.';

/** Where the pipeline publishes an enterprise's alerts. */
export function alertsSubject(enterprise: string): string {
  return `${ALERTS_PREFIX}${enterprise}`;
}

/** Every enterprise's alerts: each api node subscribes this once. */
export const ALL_ALERTS_SUBJECT = `${ALERTS_PREFIX}*`;

/** Where the workers announce an enterprise's dashboard events (remediation outcomes, discovered devices). */
export function enterpriseEventsSubject(enterprise: string): string {
  return `${EVENTS_PREFIX}${enterprise}`;
}

/** Every enterprise's dashboard events. */
export const ALL_ENTERPRISE_EVENTS_SUBJECT = `${EVENTS_PREFIX}*`;

/** The enterprise of an `alerts.<enterprise>` or `events.<enterprise>` subject; null for any other subject. */
export function enterpriseOfSubject(subject: string): string | null {
  for (const prefix of [ALERTS_PREFIX, EVENTS_PREFIX]) {
    if (subject.startsWith(prefix) && subject.length > prefix.length) return subject.slice(prefix.length);
  }
  return null;
}

/** A decoded message, or why it is not one. */
export type LiveDecoding<T> = { ok: true; value: T } | { ok: false; reason: string };

const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

/** Alerts of one enterprise as one msgpack message: `{ type: 'alerts', alerts: [...] }`. */
export function encodeAlerts(alerts: readonly Alert[]): Uint8Array {
  // A plain Uint8Array, not a pooled Buffer: the worker hands it to the main thread.
  return Uint8Array.from(packr.pack({ type: 'alerts', alerts }));
}

const STRING_FIELDS = [
  'alert_id',
  'enterprise_id',
  'user_id',
  'user_name',
  'device_id',
  'app_id',
  'app_name',
  'action',
  'tower_id',
  'tower_location',
  'region',
  'carrier',
  'policy_id',
  'policy_name',
  'severity',
  'policy_version',
] as const satisfies ReadonlyArray<keyof Alert>;
const NULLABLE_STRING_FIELDS = ['rule_id', 'remediation'] as const satisfies ReadonlyArray<keyof Alert>;
const NULLABLE_NUMBER_FIELDS = ['lat', 'lon'] as const satisfies ReadonlyArray<keyof Alert>;

/** The alerts of one message on `alerts.<enterprise>`. */
export function decodeAlerts(data: Uint8Array): LiveDecoding<Alert[]> {
  let body: unknown;
  try {
    body = unpackr.unpack(data);
  } catch (err) {
    return { ok: false, reason: `not msgpack: ${err instanceof Error ? err.message : String(err)}` };
  }
  if (!isObject(body) || body['type'] !== 'alerts' || !Array.isArray(body['alerts']))
    return { ok: false, reason: 'expected { type: "alerts", alerts: [...] }' };
  const alerts: unknown[] = body['alerts'];
  for (let i = 0; i < alerts.length; i++) {
    const problem = alertProblem(alerts[i]);
    if (problem !== null) return { ok: false, reason: `alerts[${i}]${problem}` };
  }
  return { ok: true, value: alerts as Alert[] };
}

function alertProblem(a: unknown): string | null {
  if (!isObject(a)) return ' must be a map';
  for (const f of STRING_FIELDS) if (typeof a[f] !== 'string') return `.${f} must be a string`;
  for (const f of NULLABLE_STRING_FIELDS) if (a[f] !== null && typeof a[f] !== 'string') return `.${f} must be a string or null`;
  for (const f of NULLABLE_NUMBER_FIELDS) if (a[f] !== null && typeof a[f] !== 'number') return `.${f} must be a number or null`;
  // Dashboards show it as a date: it must be one.
  const ts = a['ts'];
  if (typeof ts !== 'number' || Number.isNaN(new Date(ts).getTime())) return '.ts must be milliseconds since the epoch';
  return null;
}

/** A dashboard event as published on `events.<enterprise>`. */
export function encodeEnterpriseEvent(event: EnterpriseEvent): string {
  return JSON.stringify(event);
}

/**
 * The `type` of a dashboard event. Only the type is read: the api forwards the text as it is,
 * so a new kind of event reaches pages without a change to the api.
 */
export function enterpriseEventType(text: string): LiveDecoding<string> {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    return { ok: false, reason: `not JSON: ${err instanceof Error ? err.message : String(err)}` };
  }
  if (!isObject(body) || typeof body['type'] !== 'string') return { ok: false, reason: 'expected a JSON object with a string "type"' };
  return { ok: true, value: body['type'] };
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

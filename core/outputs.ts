/**
 * Notification outputs: where an enterprise's violations are sent besides the dashboards. An
 * output is a webhook (a JSON body, or Slack's incoming-webhook shape) with a minimum severity,
 * optional filters (apps, towers, policies) and a dedup window per (user, app, action), so that
 * a device streaming video raises one notification per window, not hundreds. Bodies are signed
 * (HMAC-SHA256 over `<timestamp>.<body>` with the output's secret).
 *
 * State, in NATS KV (the api writes outputs; the notifier, pipeline/notifier.ts, reads them):
 * - `towerwatch-outputs`: `<enterprise>.<output_id>` → {@link Output};
 * - `towerwatch-output-deliveries`: `<enterprise>.<output_id>` → its last deliveries (the key's
 *   history, {@link DELIVERY_HISTORY} entries);
 * - `towerwatch-output-windows`: `<output_id>.<hash of user, app, action>` → {@link DedupWindow},
 *   shared by every notifier process.
 *
 * The buckets are opened here; the rest is pure.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import type { KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { z } from 'zod';
import { openKvBucket } from './nats/index.js';
import { decodeStoredJson } from './storedJson.js';
import { SEVERITIES, type Severity } from './domain.js';
import type { Alert } from './liveMessages.js';

export const OUTPUTS_BUCKET = 'towerwatch-outputs';
export const DELIVERIES_BUCKET = 'towerwatch-output-deliveries';
export const WINDOWS_BUCKET = 'towerwatch-output-windows';
/** Deliveries kept per output (a KV key's history holds at most 64). */
export const DELIVERY_HISTORY = 64;
/** The longest dedup window; also how long the windows bucket keeps an entry. */
export const MAX_DEDUP_WINDOW_SECONDS = 86_400;
export const DEFAULT_DEDUP_WINDOW_SECONDS = 300;
export const OUTPUT_FORMATS = ['json', 'slack'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

export const SIGNATURE_HEADER = 'x-towerwatch-signature';
export const TIMESTAMP_HEADER = 'x-towerwatch-timestamp';
export const DELIVERY_HEADER = 'x-towerwatch-delivery';

export interface OutputFilters {
  /** Only these apps, towers or policies; an empty list: all. */
  app_ids: string[];
  tower_ids: string[];
  policy_ids: string[];
}

export interface Output {
  output_id: string;
  enterprise_id: string;
  name: string;
  type: 'webhook';
  url: string;
  format: OutputFormat;
  /** The HMAC key; the api shows it once, when the output is made. */
  secret: string;
  min_severity: Severity;
  filters: OutputFilters;
  /** 0: every violation; otherwise one notification per (user, app, action) per window. */
  dedup_window_seconds: number;
  enabled: boolean;
  created_at: number;
  created_by: string;
  updated_at: number;
}

/** An output as stored: what the api writes, checked again by whoever reads it back. */
const storedOutput = z.object({
  output_id: z.string().min(1),
  enterprise_id: z.string().min(1),
  name: z.string(),
  type: z.literal('webhook'),
  url: z.string().min(1),
  format: z.enum(OUTPUT_FORMATS),
  secret: z.string(),
  min_severity: z.enum(SEVERITIES),
  filters: z.object({ app_ids: z.array(z.string()), tower_ids: z.array(z.string()), policy_ids: z.array(z.string()) }),
  dedup_window_seconds: z.number().int().min(0).max(MAX_DEDUP_WINDOW_SECONDS),
  enabled: z.boolean(),
  created_at: z.number(),
  created_by: z.string(),
  updated_at: z.number(),
});

/** A bucket entry's value as an {@link Output}, or null when it is not one (not JSON, or not that shape). */
export function decodeStoredOutput(data: Uint8Array): Output | null {
  return decodeStoredJson(storedOutput, data);
}

export type DeliveryStatus = 'delivered' | 'failed' | 'dropped';

export interface Delivery {
  delivery_id: string;
  alert_id: string;
  status: DeliveryStatus;
  attempts: number;
  /** The receiver's last HTTP status, or null when it never answered. */
  http_status: number | null;
  error: string | null;
  /** Violations of the same (user, app, action) suppressed by the window before this one. */
  suppressed: number;
  at: number;
  duration_ms: number;
}

export interface DedupWindow {
  /** When the notification that opened the window was sent. */
  since: number;
  /** Violations suppressed since. */
  suppressed: number;
}

const storedWindow = z.object({ since: z.number(), suppressed: z.number().int().min(0) });

/** A dedup window as the windows bucket holds it, or null when the entry is not one. */
export function decodeStoredWindow(data: Uint8Array): DedupWindow | null {
  return decodeStoredJson(storedWindow, data);
}

export const newOutputId = (): string => `out_${randomBytes(9).toString('base64url')}`;
export const newOutputSecret = (): string => `whsec_${randomBytes(24).toString('base64url')}`;
export const outputKey = (enterprise: string, outputId: string): string => `${enterprise}.${outputId}`;

/** The window key of an alert for an output: one window per (user, app, action). */
export function windowKey(outputId: string, alert: Pick<Alert, 'user_id' | 'device_id' | 'app_id' | 'action'>): string {
  // The device when the user is unknown, so that unassigned devices do not share one window.
  const who = alert.user_id === '' ? `device:${alert.device_id}` : alert.user_id;
  return `${outputId}.${createHash('sha256').update(`${who}\n${alert.app_id}\n${alert.action}`).digest('hex').slice(0, 32)}`;
}

const rank = (s: string): number => SEVERITIES.indexOf(s as Severity);

/**
 * Whether `output` takes `alert`: enabled, the alert at or above its minimum severity (or its
 * rule asked for `remediation: notify`), and within its filters.
 */
export function outputTakes(output: Output, alert: Alert): boolean {
  if (!output.enabled || alert.enterprise_id !== output.enterprise_id) return false;
  if (rank(alert.severity) < rank(output.min_severity) && alert.remediation !== 'notify') return false;
  const { app_ids, tower_ids, policy_ids } = output.filters;
  if (app_ids.length > 0 && !app_ids.includes(alert.app_id)) return false;
  if (tower_ids.length > 0 && !tower_ids.includes(alert.tower_id)) return false;
  if (policy_ids.length > 0 && !policy_ids.includes(alert.policy_id)) return false;
  return true;
}

/** The body sent for one violation, in the output's format. */
export function notificationBody(output: Output, alert: Alert, suppressed: number): string {
  const timestamp = new Date(alert.ts).toISOString();
  if (output.format === 'slack') {
    const who = alert.user_name || alert.device_id;
    const where = alert.tower_location ? `${alert.tower_id} (${alert.tower_location})` : alert.tower_id;
    const more = suppressed > 0 ? ` (+${suppressed} more since the last notification)` : '';
    return JSON.stringify({
      text: `[${alert.severity.toUpperCase()}] ${who}: ${alert.app_name || alert.app_id} ${alert.action} at ${where}, denied by ${alert.policy_name}${more}`,
    });
  }
  return JSON.stringify({
    type: 'violation',
    output_id: output.output_id,
    enterprise_id: alert.enterprise_id,
    suppressed_since_last: suppressed,
    alert: {
      alert_id: alert.alert_id,
      timestamp,
      user_id: alert.user_id,
      user_name: alert.user_name,
      device_id: alert.device_id,
      app_id: alert.app_id,
      app_name: alert.app_name,
      action: alert.action,
      tower_id: alert.tower_id,
      tower_location: alert.tower_location,
      region: alert.region,
      carrier: alert.carrier,
      policy_id: alert.policy_id,
      policy_name: alert.policy_name,
      rule_id: alert.rule_id,
      severity: alert.severity,
      remediation: alert.remediation,
    },
  });
}

/** `v1=<hex>`: HMAC-SHA256 of `<timestamp>.<body>` (timestamp in seconds, as sent in its header). */
export function signature(secret: string, timestampSeconds: number, body: string): string {
  return `v1=${createHmac('sha256', secret).update(`${timestampSeconds}.${body}`).digest('hex')}`;
}

/** How the outputs buckets are opened: requests time out after 2 s; `retryForMs` as openKvBucket takes it. */
export interface OpenOutputsOptions {
  retryForMs?: number;
}

/** The outputs bucket (the api writes it, the notifier watches it). */
export function openOutputsBucket(nc: NatsConnection, replicas: number, options: OpenOutputsOptions = {}): Promise<KV> {
  return openKvBucket(nc, OUTPUTS_BUCKET, { history: 1, replicas, description: "towerwatch: enterprises' notification outputs", timeoutMs: 2_000, ...options });
}

/** The delivery log: each output's key keeps its last {@link DELIVERY_HISTORY} deliveries. */
export function openDeliveriesBucket(nc: NatsConnection, replicas: number, options: OpenOutputsOptions = {}): Promise<KV> {
  return openKvBucket(nc, DELIVERIES_BUCKET, {
    history: DELIVERY_HISTORY,
    replicas,
    ttl: 7 * 86_400_000,
    description: 'towerwatch: the last deliveries of each notification output',
    timeoutMs: 2_000,
    ...options,
  });
}

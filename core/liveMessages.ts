/**
 * The live messages: alerts as the pipeline publishes them, and what `/ws/alerts` sends, one
 * discriminated union (`type`) written by the api's socket and the workers that announce
 * events, read by the dashboard page. Types only, and nothing that needs Node: the page
 * (api/web/, bundled for the browser) imports this file.
 */
import type { DiscoveredDeviceView } from './discoveredDevice.js';

/** A violation as the pipeline publishes it on `alerts.<enterprise>` (msgpack; the codec is core/live.ts). */
export interface Alert {
  alert_id: string;
  enterprise_id: string;
  /** Milliseconds since the epoch. */
  ts: number;
  user_id: string;
  user_name: string;
  device_id: string;
  app_id: string;
  app_name: string;
  action: string;
  tower_id: string;
  tower_location: string;
  region: string;
  lat: number | null;
  lon: number | null;
  carrier: string;
  policy_id: string;
  policy_name: string;
  rule_id: string | null;
  severity: string;
  remediation: string | null;
  policy_version: string;
}

/**
 * One violation as dashboards see it, also the fields of `GET /dashboard/alerts` (api/alerts.ts
 * checks its schema against this): the socket is the enterprise's, and the time is ISO 8601.
 */
export type LiveAlert = Omit<Alert, 'enterprise_id' | 'ts' | 'lat' | 'lon' | 'policy_version'> & { timestamp: string };

/** One alert per message: sockets without `batch=1`. */
export type AlertMessage = { type: 'alert' } & LiveAlert;

/** What the socket sends with `batch=1`: the alerts of one pipeline batch. */
export interface AlertsMessage {
  type: 'alerts';
  alerts: LiveAlert[];
}

/** A remediation outcome, from the remediation worker (pipeline/remediator.ts). */
export interface RemediationMessage {
  type: 'remediation';
  action_id: string;
  alert_id: string;
  action_name: string;
  status: string;
  trigger: string;
  device_id: string;
  tower_id: string;
  attempts: number;
  reason: string | null;
  executed_at: string;
}

/** A device new to the registry, from the discovery worker (pipeline/discovery.ts). */
export interface DeviceDiscoveredMessage {
  type: 'device.discovered';
  device: DiscoveredDeviceView;
}

/** A block whose traffic goes on after its grace period: the tower is not honouring it (pipeline/remediator.ts). */
export interface BlockIneffectiveMessage {
  type: 'block.ineffective';
  block_id: string;
  device_id: string;
  app_id: string | null;
  tower_id: string;
  events_since: number;
  last_seen_at: string;
}

/** Events the workers publish on `events.<enterprise>`; the api forwards them as they are. */
export type EnterpriseEvent = RemediationMessage | DeviceDiscoveredMessage | BlockIneffectiveMessage;

/** The socket's own messages. */
export interface SubscribedMessage {
  type: 'subscribed';
  enterprise_id: string;
  filters: Record<string, unknown>;
  expires_at: string;
}
/** Every 15 s, so a client can tell a quiet connection from a dead one. */
export interface HeartbeatMessage {
  type: 'heartbeat';
  ts: string;
}
/** The answer to `{"type":"ping"}`. */
export interface PongMessage {
  type: 'pong';
  ts: string;
}

export type LiveMessage = AlertMessage | AlertsMessage | EnterpriseEvent | SubscribedMessage | HeartbeatMessage | PongMessage;

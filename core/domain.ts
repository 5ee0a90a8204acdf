/**
 * Domain types shared by every part of towerwatch: the events towers send and the
 * control-plane entities of the product brief. Plain data, no behaviour.
 */

/** One app-usage event as a tower reports it. The tower does not know the user. */
export interface UsageEvent {
  /** Unique per tower: the tower's own sequence number (unsigned integer ≤ 2^53 − 1). */
  event_id: number;
  /** Milliseconds since the Unix epoch. */
  ts: number;
  carrier: string;
  tower: string;
  /** Device identity: a hash of IMEI/IMSI, never the raw number. */
  device: string;
  app: string;
  action: string;
  bytes_up: number;
  bytes_down: number;
}

/** A tower's report that it has seen a device (new or known). */
export interface DiscoveryReport {
  ts: number;
  carrier: string;
  tower: string;
  device: string;
  model: string;
  os: string;
  os_version: string;
  first_seen: boolean;
  /** The enterprise account of the SIM, when the carrier knows it. */
  enterprise?: string;
}

export const PERMISSIONS = ['allow', 'deny'] as const;
export type Permission = (typeof PERMISSIONS)[number];

export const SEVERITIES = ['low', 'medium', 'high', 'critical'] as const;
export type Severity = (typeof SEVERITIES)[number];

export const REMEDIATIONS = ['notify', 'block_app', 'block_device'] as const;
export type Remediation = (typeof REMEDIATIONS)[number];

export const DEVICE_STATUSES = ['registered', 'active', 'inactive', 'discovered', 'rejected', 'retired'] as const;
export type DeviceStatus = (typeof DEVICE_STATUSES)[number];

export const ACCOUNT_ROLES = ['carrier_operator', 'enterprise_admin', 'analyst', 'viewer'] as const;
export type AccountRole = (typeof ACCOUNT_ROLES)[number];

/** Identifiers are safe in NATS subjects and KV keys: letters, digits, `_` and `-`. */
export const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

export interface Plan {
  id: string;
  name: string;
  /** Whether violations with a remediation are acted on automatically. */
  auto_remediation: boolean;
  /** Days of history kept in ClickHouse. */
  retention_days: number;
  /** How long an automatic block lasts before the towers carry the device again; none: until lifted. */
  block_ttl_seconds?: number;
}

export interface Enterprise {
  id: string;
  name: string;
  plan_id: string;
  /** IANA time zone used by time-window conditions in this enterprise's rules. */
  timezone: string;
  /** Carriers whose SIMs the enterprise's devices use: their operators may see it. */
  carrier_ids?: string[];
}

export interface Carrier {
  id: string;
  name: string;
  /** Mobile country code and mobile network code, e.g. 310 / 410 for AT&T. */
  mcc: string;
  mnc: string;
  country: string;
}

export interface Tower {
  id: string;
  /** Human name of the place, e.g. "New York City". */
  location: string;
  region: string;
  lat: number;
  lon: number;
  carrier_ids: string[];
  status: 'active' | 'inactive';
}

export interface App {
  id: string;
  name: string;
  category: string;
}

export interface Action {
  id: string;
  name: string;
}

export interface User {
  id: string;
  enterprise_id: string;
  name: string;
  email: string;
}

export interface Role {
  id: string;
  enterprise_id: string;
  name: string;
}

export interface UserRole {
  enterprise_id: string;
  user_id: string;
  role_id: string;
  assigned_at: string;
}

export interface RolePolicy {
  enterprise_id: string;
  role_id: string;
  policy_id: string;
  assigned_at: string;
}

export const POLICY_MODES = ['enforce', 'shadow'] as const;
export type PolicyMode = (typeof POLICY_MODES)[number];

export interface Policy {
  id: string;
  enterprise_id: string;
  name: string;
  description?: string;
  default_permission: Permission;
  /** Severity reported when this policy's default denies an event. */
  default_severity: Severity;
  enabled: boolean;
  /** `shadow`: evaluated on live traffic, its would-be verdicts stored, never enforced. @default 'enforce' */
  mode?: PolicyMode;
  updated_at: string;
  /** Console account that last changed it (absent: seeded or older than this field). */
  updated_by?: string;
}

/** Conditions narrowing when a rule applies; every given condition must hold. */
export interface RuleConditions {
  /** Local days of week in the enterprise's time zone: "mon" … "sun". */
  days?: string[];
  /** Local time window "HH:MM"–"HH:MM" (to is exclusive; from > to wraps past midnight). */
  time?: { from: string; to: string };
  towers?: string[];
  regions?: string[];
  os?: string[];
  /** Applies to devices whose OS version is at least this. */
  os_version_at_least?: string;
  /** Applies to devices whose OS version is below this (enforces a minimum version). */
  os_version_below?: string;
  bytes_up_over?: number;
  bytes_down_over?: number;
  bytes_total_over?: number;
}

export interface PolicyRule {
  id: string;
  enterprise_id: string;
  policy_id: string;
  /** Narrows the rule to one of the policy's roles; absent: every role of the policy. */
  role_id?: string;
  app_id?: string;
  app_name?: string;
  app_category?: string;
  action_id?: string;
  action?: string;
  permission: Permission;
  severity?: Severity;
  remediation?: Remediation;
  when?: RuleConditions;
  enabled: boolean;
  /** `shadow`: as a shadow policy's rules, whatever its policy's mode. @default 'enforce' */
  mode?: PolicyMode;
  updated_at: string;
  /** Console account that last changed it (absent: seeded or older than this field). */
  updated_by?: string;
}

export interface Device {
  id: string;
  enterprise_id: string;
  user_id: string | null;
  model: string;
  os: string;
  os_version: string;
  status: DeviceStatus;
  registered_at: string | null;
  first_seen?: string;
  /**
   * As of the registry's last write, which happens only on a change (a new device, a new model
   * or OS): the sightings in ClickHouse (`discovery_sightings`) have the true last sighting.
   */
  last_seen?: string;
  /** Where towers first and (as of the last write) last reported it, and through which carrier. */
  first_tower_id?: string;
  last_tower_id?: string;
  carrier_id?: string;
  /** When and why it was last rejected, retired or (re-)registered. */
  status_changed_at?: string;
  status_reason?: string | null;
}

/** A console (dashboard) account. Enterprise accounts have `enterprise_id`; carrier operators `carrier_id`. */
export interface Account {
  username: string;
  display_name: string;
  role: AccountRole;
  enterprise_id: string | null;
  carrier_id: string | null;
  password_hash: string;
  created_at: string;
}

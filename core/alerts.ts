/** A violation as the pipeline publishes it on `alerts.<enterprise>` (msgpack; see docs/wire-format.md). */
export interface Alert {
  alert_id: string;
  enterprise_id: string;
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

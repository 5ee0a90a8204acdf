/**
 * For tests: an alert as the pipeline publishes it on `alerts.<enterprise>`, the brief's (John
 * Doe uploading a file with Slack in New York, denied by the Admin Policy) under short fixed
 * ids that tests can assert, with any field changed.
 */
import type { Alert } from '../live.js';

export function testAlert(alertId: string, fields: Partial<Alert> = {}): Alert {
  return {
    alert_id: alertId,
    enterprise_id: 'acme',
    ts: Date.UTC(2026, 0, 1),
    user_id: 'u1',
    user_name: 'John Doe',
    device_id: 'd1',
    app_id: 'slack',
    app_name: 'Slack',
    action: 'Upload File',
    tower_id: 't1',
    tower_location: 'New York City',
    region: 'US-NY',
    lat: null,
    lon: null,
    carrier: 'att',
    policy_id: 'p1',
    policy_name: 'Admin Policy',
    rule_id: '',
    severity: 'high',
    remediation: null,
    policy_version: 'v1',
    ...fields,
  };
}

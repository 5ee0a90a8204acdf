/**
 * Why a stored verdict: `GET /dashboard/alerts/{alert_id}/explain` and
 * `GET /app-usage/{event_key}/explain`. The event's stored decision inputs are replayed through
 * the policy version that decided it (api/policyVersions.ts) with the reference evaluator's
 * explanation (rules-wasm/explain.ts), and the answer says whether the replay gives the stored
 * verdict (it must; a mismatch is reported, never hidden).
 */
import { z } from 'zod';
import { explainReference, normalizePolicies } from '../../rules-wasm/index.js';
import { route, type ApiContext, type ApiRoute } from '../context.js';
import { ApiError } from '../errors.js';
import { evalEventOfStored, findAlertRow, findDecidedEvent, storedVerdictOf } from '../history.js';
import { enterpriseQuery, iso, verdictShape } from '../schemas.js';
import { scopeOf } from '../tenancy.js';

const explainShape = z.strictObject({
  event_key: z.string(),
  ts: z.string(),
  device_id: z.string(),
  user_id: z.string(),
  inputs: z.strictObject({
    role_ids: z.array(z.string()),
    app: z.string(),
    app_category: z.string().nullable(),
    action: z.string(),
    tower_id: z.string(),
    region: z.string().nullable(),
    os: z.string().nullable(),
    os_version: z.string().nullable(),
    bytes_up: z.number(),
    bytes_down: z.number(),
  }),
  stored: verdictShape,
  explanation: z.strictObject({
    verdict: verdictShape,
    deciding: z.unknown(),
    beaten: z.array(z.unknown()),
    not_matching: z.array(z.unknown()),
  }),
  matches_stored: z.boolean(),
  policy_version: z.strictObject({ version: z.string(), author: z.string(), created_at: z.string(), timezone: z.string() }),
});

/** `<carrier>:<tower_id>:<event_id>`, the alert id's form. */
const EVENT_KEY = /^([A-Za-z0-9_-]{1,64}):([A-Za-z0-9_-]{1,64}):(\d{1,16})$/;

export function explainRoutes(ctx: ApiContext): ApiRoute[] {
  const explain = async (enterprise: string, key: string | undefined, what: string): Promise<z.infer<typeof explainShape>> => {
    const m = EVENT_KEY.exec(key ?? '');
    const row =
      m === null
        ? null
        : await findAlertRow(ctx.recentAlerts, enterprise, key ?? '', () => findDecidedEvent(ctx.clickhouse, enterprise, m[1]!, m[2]!, Number(m[3])));
    if (row === null) throw new ApiError(404, 'not_found', `no ${what} '${key ?? ''}' in this enterprise`, { [what.replace(' ', '_')]: key ?? '' });
    if (row.decision_inputs !== 1 || row.policy_version === '' || row.verdict === 'unregistered') {
      throw new ApiError(
        422,
        'not_replayable',
        row.verdict === 'unregistered'
          ? 'no policy decided this event: its device was not registered to a user'
          : 'this event was stored before towerwatch kept the inputs of each decision (schema 9); it cannot be replayed',
        { event_key: key ?? '' },
      );
    }
    const version = await ctx.versions.get(enterprise, row.policy_version);
    if (version === null) {
      throw new ApiError(404, 'version_unknown', `policy version ${row.policy_version} was not recorded (it is older than version history)`, {
        policy_version: row.policy_version,
      });
    }
    const set = normalizePolicies(version.inputs, { timezone: version.timezone });
    const event = evalEventOfStored(row);
    const explanation = explainReference(set, event);
    const stored = storedVerdictOf(row);
    const v = explanation.verdict;
    return {
      event_key: `${row.carrier}:${row.tower_id}:${row.event_id}`,
      ts: iso(row.ts),
      device_id: row.device_id,
      user_id: row.user_id,
      inputs: {
        role_ids: [...event.role_ids],
        app: event.app ?? '',
        app_category: event.app_category ?? null,
        action: event.action ?? '',
        tower_id: row.tower_id,
        region: event.region ?? null,
        os: event.os ?? null,
        os_version: event.os_version ?? null,
        bytes_up: row.bytes_up,
        bytes_down: row.bytes_down,
      },
      stored,
      explanation,
      matches_stored:
        v.permission === stored.permission &&
        v.rule_id === stored.rule_id &&
        v.policy_id === stored.policy_id &&
        v.severity === stored.severity &&
        v.remediation === stored.remediation,
      policy_version: { version: version.version, author: version.author, created_at: iso(version.created_at), timezone: version.timezone },
    };
  };
  return [
    route({
      method: 'get',
      path: '/dashboard/alerts/{alert_id}/explain',
      tag: 'dashboard',
      summary:
        "Why this alert: the deciding rule with the values its tests saw, the rules it beat and why, the policy version with its author; replayed from the event's stored inputs",
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery }),
      response: explainShape,
      handler: async ({ query, params, principal }) => ({
        body: await explain(scopeOf(ctx.view, principal, query.enterprise_id), params['alert_id'], 'alert'),
      }),
    }),
    route({
      method: 'get',
      path: '/app-usage/{event_key}/explain',
      tag: 'history',
      summary: 'Why this verdict for one stored event (<carrier>:<tower_id>:<event_id>), allowed or denied: as the alert explanation',
      access: 'history',
      query: z.strictObject({ ...enterpriseQuery }),
      response: explainShape,
      handler: async ({ query, params, principal }) => ({
        body: await explain(scopeOf(ctx.view, principal, query.enterprise_id), params['event_key'], 'event'),
      }),
    }),
  ];
}

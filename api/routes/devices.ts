/** `/devices` and `/devices/discovered`: the enterprise's device registry (control plane) with last sightings (ClickHouse). */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { ConflictError } from '../../core/controlPlane/index.js';
import { discoveredDeviceView } from '../../core/discoveredDevice.js';
import type { Device } from '../../core/domain.js';
import { queryDeviceLastSeen, queryDeviceSightings, tableOf, type DeviceSighting } from '../../core/clickhouse/index.js';
import { route, type ApiContext, type ApiRoute } from '../context.js';
import { ApiError } from '../errors.js';
import { enterpriseQuery, id, iso, pageInfo, pageQuery, paginate, revisionTag, naturalCompare } from '../schemas.js';
import { scopeOf } from '../tenancy.js';

/** Statuses whose usage is enforced: such a device cannot be registered again. */
const IN_SERVICE: ReadonlySet<Device['status']> = new Set(['registered', 'active', 'inactive']);

const discoveredItem = z.strictObject({
  id: z.string(),
  model: z.string(),
  os: z.string(),
  os_version: z.string(),
  status: z.literal('discovered'),
  first_seen: z.string().nullable(),
  last_seen: z.string().nullable(),
  first_tower_id: z.string().nullable(),
  first_tower_location: z.string().nullable(),
  last_tower_id: z.string().nullable(),
  last_tower_location: z.string().nullable(),
  carrier_id: z.string().nullable(),
  sightings: z.number().int(),
});

/** A discovered device as listed: what the socket announces, plus how often towers reported it. */
function discoveredView(ctx: Pick<ApiContext, 'view'>, d: Device, s: DeviceSighting | undefined): z.infer<typeof discoveredItem> {
  return { ...discoveredDeviceView(d, (tower) => ctx.view.tower(tower)?.location, s), sightings: s?.sightings ?? 0 };
}

async function devicesSightedAt(ctx: ApiContext, enterprise: string, tower: string): Promise<Set<string>> {
  const rs = await ctx.clickhouse.client.query({
    query: `SELECT DISTINCT device_id FROM ${tableOf(ctx.clickhouse, 'discovery_sightings')} WHERE enterprise_id = {enterprise:String} AND tower_id = {tower:String}`,
    query_params: { enterprise, tower },
    format: 'JSONEachRow',
  });
  return new Set((await rs.json<{ device_id: string }>()).map((r) => r.device_id));
}

/** A registered device seen within this long is "active", else "inactive". */
export const ACTIVE_WITHIN_MS = 24 * 3600e3;
const text = z.string().trim().min(1).max(128);
const listedStatus = z.enum(['registered', 'active', 'inactive', 'rejected', 'retired']);

export function deviceRoutes(ctx: ApiContext): ApiRoute[] {
  /** `POST /devices/{device_id}/<verb>`: moves a device of the caller's enterprise to `to`. */
  const transition = (verb: string, to: 'rejected' | 'retired', from: readonly Device['status'][], summary: string): ApiRoute =>
    route({
      method: 'post',
      path: `/devices/{device_id}/${verb}`,
      tag: 'devices',
      summary,
      access: 'write',
      body: z.strictObject({ ...enterpriseQuery, reason: z.string().trim().max(500).optional() }).default({}),
      response: z.strictObject({
        device_id: z.string(),
        status: z.literal(to),
        previous_status: z.string(),
        changed_at: z.string(),
        reason: z.string().nullable(),
      }),
      handler: async ({ body, principal, params }) => {
        const enterprise = scopeOf(ctx.view, principal, body.enterprise_id);
        const deviceId = params['device_id'] ?? '';
        const current = ctx.view.get('device', enterprise, deviceId);
        // Another enterprise's device is "not found" here, as one that does not exist.
        if (current === undefined) throw new ApiError(404, 'not_found', `no device '${deviceId}' in this enterprise`, { device_id: deviceId });
        const was = current.value.status;
        if (!from.includes(was)) {
          throw new ApiError(409, 'invalid_transition', `device '${deviceId}' is ${was}; only a ${from.join(', ')} device can be ${to}`, {
            device_id: deviceId,
            status: was,
            allowed_from: from,
          });
        }
        const changedAt = iso(ctx.now());
        const device: Device = { ...current.value, status: to, status_changed_at: changedAt, status_reason: body.reason ?? null };
        let revision: number;
        try {
          revision = await ctx.store.update('device', device, current.revision);
        } catch (err) {
          if (err instanceof ConflictError)
            throw new ApiError(409, 'conflict', `device '${deviceId}' was changed by someone else at the same moment; retry`, { device_id: deviceId });
          throw err;
        }
        return {
          headers: { etag: revisionTag(revision) },
          body: { device_id: deviceId, status: to, previous_status: was, changed_at: changedAt, reason: body.reason ?? null },
        };
      },
    });

  return [
    route({
      method: 'get',
      path: '/devices',
      tag: 'devices',
      summary: 'Registered devices with their user and last sighting (status active/inactive from the last 24 h)',
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery, ...pageQuery, user_id: id.optional(), status: listedStatus.optional() }),
      response: z.strictObject({
        devices: z.array(
          z.strictObject({
            id: z.string(),
            user_id: z.string().nullable(),
            user_name: z.string().nullable(),
            model: z.string(),
            os: z.string(),
            os_version: z.string(),
            status: listedStatus,
            registered_at: z.string().nullable(),
            last_seen: z.string().nullable(),
            last_tower_id: z.string().nullable(),
          }),
        ),
        ...pageInfo,
      }),
      handler: async ({ query, principal }) => {
        const enterprise = scopeOf(ctx.view, principal, query.enterprise_id);
        const registered = ctx.view
          .devicesOfEnterprise(enterprise)
          .filter((d) => d.status !== 'discovered' && (query.user_id === undefined || d.user_id === query.user_id))
          .sort((a, b) => naturalCompare(a.id, b.id));
        // Status active/inactive needs the last sighting, so a status filter reads every device's.
        const candidates = query.status === undefined ? paginate(registered, query.page, query.limit).items : registered;
        const ids = candidates.map((d) => d.id);
        // Last seen: using an app (app_usage) or reported by a tower (discovery_sightings), whichever is later.
        const [used, sighted] = await Promise.all([
          ids.length === 0 ? [] : queryDeviceLastSeen(ctx.clickhouse, { enterpriseId: enterprise, deviceIds: ids, limit: ids.length }),
          queryDeviceSightings(ctx.clickhouse, { enterpriseId: enterprise, deviceIds: ids }),
        ]);
        const seen = new Map<string, { last_seen_ms: number; last_tower_id: string }>(sighted);
        for (const u of used) if ((seen.get(u.device_id)?.last_seen_ms ?? -1) < u.last_seen_ms) seen.set(u.device_id, u);
        const now = ctx.now();
        const shaped = candidates.map((d) => {
          const s = seen.get(d.id);
          const lastMs = s?.last_seen_ms ?? (d.last_seen !== undefined ? Date.parse(d.last_seen) : undefined);
          const status =
            d.status === 'registered' || d.status === 'active' || d.status === 'inactive'
              ? lastMs === undefined
                ? 'registered'
                : now - lastMs <= ACTIVE_WITHIN_MS
                  ? 'active'
                  : 'inactive'
              : d.status;
          return {
            id: d.id,
            user_id: d.user_id,
            user_name: d.user_id === null ? null : (ctx.view.user(d.user_id, enterprise)?.name ?? null),
            model: d.model,
            os: d.os,
            os_version: d.os_version,
            status: status as z.infer<typeof listedStatus>,
            registered_at: d.registered_at,
            last_seen: lastMs === undefined ? null : iso(lastMs),
            last_tower_id: s?.last_tower_id ?? null,
          };
        });
        if (query.status === undefined) {
          return { body: { devices: shaped, ...paginate(registered, query.page, query.limit).info } };
        }
        const { items, info } = paginate(
          shaped.filter((d) => d.status === query.status),
          query.page,
          query.limit,
        );
        return { body: { devices: items, ...info } };
      },
    }),
    route({
      method: 'post',
      path: '/devices',
      tag: 'devices',
      summary: 'Register a device for a user; give the device_id of a discovered (or rejected, retired) one to onboard it',
      access: 'write',
      successStatus: 201,
      body: z.strictObject({
        ...enterpriseQuery,
        device_id: z
          .string()
          .regex(/^[A-Za-z0-9_-]{1,64}$/)
          .optional(),
        user_id: id,
        model: text.optional(),
        os: text.optional(),
        os_version: z.string().trim().max(32).optional(),
      }),
      response: z.strictObject({
        device_id: z.string(),
        user_id: z.string(),
        model: z.string(),
        os: z.string(),
        os_version: z.string(),
        status: z.literal('registered'),
        registered_at: z.string(),
      }),
      handler: async ({ body, principal }) => {
        const enterprise = scopeOf(ctx.view, principal, body.enterprise_id);
        if (ctx.view.user(body.user_id, enterprise) === undefined) {
          throw new ApiError(400, 'unknown_reference', `no user '${body.user_id}' in this enterprise`, { field: 'user_id', id: body.user_id });
        }
        const now = iso(ctx.now());
        const deviceId = body.device_id ?? `dev_${randomBytes(8).toString('hex')}`;
        // Device ids are global (a tower reports a device before anyone owns it), so a chosen id
        // must name a device this enterprise already knows (discovered, rejected or retired): one
        // unknown here gets the same 404 whether it exists elsewhere or nowhere, so another
        // enterprise's ids are never revealed (nor taken).
        const existing = ctx.view.get('device', enterprise, deviceId)?.value;
        if (body.device_id !== undefined && existing === undefined) {
          throw new ApiError(404, 'not_found', `no device '${deviceId}' known to this enterprise; to register a new device leave device_id out`, {
            device_id: deviceId,
          });
        }
        if (existing !== undefined && IN_SERVICE.has(existing.status)) {
          throw new ApiError(409, 'device_exists', `device '${deviceId}' is already registered`, { device_id: deviceId });
        }
        // A discovered device's model and OS are known from the towers; a new one needs them.
        const model = body.model ?? existing?.model;
        const os = body.os ?? existing?.os;
        if (model === undefined || os === undefined) {
          const missing = [model === undefined ? 'model' : null, os === undefined ? 'os' : null].filter((f) => f !== null);
          throw new ApiError(
            400,
            'validation_failed',
            `invalid body: ${missing.map((f) => `body.${f}: required for a device towerwatch has not discovered`).join('; ')}`,
            missing.map((f) => ({ path: `body.${f}`, message: 'required for a device towerwatch has not discovered', code: 'invalid_type' })),
          );
        }
        const device: Device = {
          ...(existing ?? {}),
          id: deviceId,
          enterprise_id: enterprise,
          user_id: body.user_id,
          model,
          os,
          os_version: body.os_version || existing?.os_version || '',
          status: 'registered',
          registered_at: now,
          status_changed_at: now,
          status_reason: null,
        };
        let revision: number;
        try {
          const current = existing === undefined ? undefined : ctx.view.get('device', enterprise, deviceId);
          revision = current === undefined ? await ctx.store.create('device', device) : await ctx.store.update('device', device, current.revision);
        } catch (err) {
          if (err instanceof ConflictError) throw new ApiError(409, 'device_exists', `device '${deviceId}' was registered meanwhile`, { device_id: deviceId });
          throw err;
        }
        return {
          status: 201,
          headers: { etag: revisionTag(revision), location: `/devices?user_id=${encodeURIComponent(body.user_id)}` },
          body: {
            device_id: deviceId,
            user_id: body.user_id,
            model: device.model,
            os: device.os,
            os_version: device.os_version,
            status: 'registered',
            registered_at: now,
          },
        };
      },
    }),
    transition(
      'reject',
      'rejected',
      ['discovered'],
      'Reject a discovered device: it stays known (towers reporting it do not list it again) and its usage is not enforced',
    ),
    transition(
      'retire',
      'retired',
      ['discovered', 'registered', 'active', 'inactive', 'rejected'],
      'Retire a device (lost, replaced): its usage is no longer enforced; its history stays',
    ),
    route({
      method: 'get',
      path: '/devices/discovered',
      tag: 'devices',
      summary: "Devices towers reported that are not registered yet, newest first (last sighting from the towers' reports)",
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery, ...pageQuery, tower_id: id.optional(), carrier_id: id.optional(), os: z.string().max(64).optional() }),
      response: z.strictObject({
        devices: z.array(discoveredItem),
        ...pageInfo,
      }),
      handler: async ({ query, principal }) => {
        const enterprise = scopeOf(ctx.view, principal, query.enterprise_id);
        // "Seen at this tower" at any time in the kept history, not only first or last.
        const atTower = query.tower_id === undefined ? null : await devicesSightedAt(ctx, enterprise, query.tower_id);
        const found = ctx.view
          .devicesOfEnterprise(enterprise)
          .filter(
            (d) =>
              d.status === 'discovered' &&
              (atTower === null || atTower.has(d.id) || d.first_tower_id === query.tower_id || d.last_tower_id === query.tower_id) &&
              (query.carrier_id === undefined || d.carrier_id === query.carrier_id) &&
              (query.os === undefined || d.os.toLowerCase() === query.os.toLowerCase()),
          )
          .sort((a, b) => naturalCompare(b.first_seen ?? '', a.first_seen ?? '') || naturalCompare(a.id, b.id));
        const { items, info } = paginate(found, query.page, query.limit);
        const sighted = await queryDeviceSightings(ctx.clickhouse, { enterpriseId: enterprise, deviceIds: items.map((d) => d.id) });
        return { body: { devices: items.map((d) => discoveredView(ctx, d, sighted.get(d.id))), ...info } };
      },
    }),
  ];
}

/** `/devices` and `/devices/discovered`: the enterprise's device registry (control plane) with last sightings (ClickHouse). */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { ConflictError } from '../../core/controlPlane/index.js';
import type { Device } from '../../core/domain.js';
import { queryDeviceLastSeen } from '../../core/schema.js';
import type { ApiContext, ApiRoute } from '../context.js';
import { ApiError } from '../errors.js';
import { enterpriseQuery, id, iso, pageInfo, pageQuery, paginate, revisionTag, naturalCompare } from '../schemas.js';
import { scopeOf, viewReplyKey } from '../tenancy.js';

/** A registered device seen within this long is "active", else "inactive". */
export const ACTIVE_WITHIN_MS = 24 * 3600e3;
const text = z.string().trim().min(1).max(128);
const listedStatus = z.enum(['registered', 'active', 'inactive', 'rejected', 'retired']);

export function deviceRoutes(ctx: ApiContext): ApiRoute[] {
  return [
    {
      method: 'get',
      path: '/devices',
      tag: 'devices',
      summary: 'Registered devices with their user and last sighting (status active/inactive from the last 24 h)',
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery, ...pageQuery, user_id: id.optional(), status: listedStatus.optional() }),
      response: z.strictObject({
        devices: z.array(z.strictObject({ id: z.string(), user_id: z.string().nullable(), user_name: z.string().nullable(), model: z.string(), os: z.string(), os_version: z.string(), status: listedStatus, registered_at: z.string().nullable(), last_seen: z.string().nullable(), last_tower_id: z.string().nullable() })),
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
        const seen = new Map(
          candidates.length === 0 ? [] : (await queryDeviceLastSeen(ctx.clickhouse, { enterpriseId: enterprise, deviceIds: candidates.map((d) => d.id), limit: candidates.length })).map((s) => [s.device_id, s]),
        );
        const now = ctx.now();
        const shaped = candidates.map((d) => {
          const s = seen.get(d.id);
          const lastMs = s?.last_seen_ms ?? (d.last_seen !== undefined ? Date.parse(d.last_seen) : undefined);
          const status = d.status === 'registered' || d.status === 'active' || d.status === 'inactive' ? (lastMs === undefined ? 'registered' : now - lastMs <= ACTIVE_WITHIN_MS ? 'active' : 'inactive') : d.status;
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
        const { items, info } = paginate(shaped.filter((d) => d.status === query.status), query.page, query.limit);
        return { body: { devices: items, ...info } };
      },
    },
    {
      method: 'post',
      path: '/devices',
      tag: 'devices',
      summary: 'Register a device for a user (give device_id to onboard a discovered one)',
      access: 'write',
      successStatus: 201,
      body: z.strictObject({ ...enterpriseQuery, device_id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/).optional(), user_id: id, model: text, os: text, os_version: z.string().trim().max(32).default('') }),
      response: z.strictObject({ device_id: z.string(), user_id: z.string(), model: z.string(), os: z.string(), os_version: z.string(), status: z.literal('registered'), registered_at: z.string() }),
      handler: async ({ body, principal }) => {
        const enterprise = scopeOf(ctx.view, principal, body.enterprise_id);
        if (ctx.view.user(body.user_id, enterprise) === undefined) {
          throw new ApiError(400, 'unknown_reference', `no user '${body.user_id}' in this enterprise`, { field: 'user_id', id: body.user_id });
        }
        const now = iso(ctx.now());
        const deviceId = body.device_id ?? `dev_${randomBytes(8).toString('hex')}`;
        const existing = ctx.view.device(deviceId);
        if (existing !== undefined && (existing.enterprise_id !== enterprise || existing.status !== 'discovered')) {
          // Same answer whether it is ours or another enterprise's: ids of others are not revealed.
          throw new ApiError(409, 'device_exists', `device '${deviceId}' is already registered`, { device_id: deviceId });
        }
        const device: Device = {
          ...(existing ?? {}),
          id: deviceId,
          enterprise_id: enterprise,
          user_id: body.user_id,
          model: body.model,
          os: body.os,
          os_version: body.os_version || existing?.os_version || '',
          status: 'registered',
          registered_at: now,
        };
        let revision: number;
        try {
          const current = existing === undefined ? null : ctx.view.get('device', enterprise, deviceId);
          revision = current === null || current === undefined ? await ctx.store.create('device', device) : await ctx.store.update('device', device, current.revision);
        } catch (err) {
          if (err instanceof ConflictError) throw new ApiError(409, 'device_exists', `device '${deviceId}' was registered meanwhile`, { device_id: deviceId });
          throw err;
        }
        return {
          status: 201,
          headers: { etag: revisionTag(revision), location: `/devices?user_id=${encodeURIComponent(body.user_id)}` },
          body: { device_id: deviceId, user_id: body.user_id, model: device.model, os: device.os, os_version: device.os_version, status: 'registered', registered_at: now },
        };
      },
    },
    {
      method: 'get',
      path: '/devices/discovered',
      cacheKey: (c) => viewReplyKey(ctx.view, c),
      tag: 'devices',
      summary: 'Devices towers reported that are not registered yet, newest first',
      access: 'read',
      query: z.strictObject({ ...enterpriseQuery, ...pageQuery, tower_id: id.optional(), carrier_id: id.optional(), os: z.string().max(64).optional() }),
      response: z.strictObject({
        devices: z.array(z.strictObject({ id: z.string(), model: z.string(), os: z.string(), os_version: z.string(), status: z.literal('discovered'), first_seen: z.string().nullable(), last_seen: z.string().nullable(), first_tower_id: z.string().nullable(), last_tower_id: z.string().nullable(), carrier_id: z.string().nullable() })),
        ...pageInfo,
      }),
      handler: ({ query, principal }) => {
        const enterprise = scopeOf(ctx.view, principal, query.enterprise_id);
        const found = ctx.view
          .devicesOfEnterprise(enterprise)
          .filter((d) => d.status === 'discovered')
          .map((d) => {
            const x = d as Device & { first_tower_id?: string; last_tower_id?: string; carrier_id?: string };
            return {
              id: d.id,
              model: d.model,
              os: d.os,
              os_version: d.os_version,
              status: 'discovered' as const,
              first_seen: d.first_seen ?? null,
              last_seen: d.last_seen ?? null,
              first_tower_id: x.first_tower_id ?? null,
              last_tower_id: x.last_tower_id ?? null,
              carrier_id: x.carrier_id ?? null,
            };
          })
          .filter((d) => (query.tower_id === undefined || d.last_tower_id === query.tower_id || d.first_tower_id === query.tower_id) && (query.carrier_id === undefined || d.carrier_id === query.carrier_id) && (query.os === undefined || d.os.toLowerCase() === query.os.toLowerCase()))
          .sort((a, b) => naturalCompare(b.first_seen ?? '', a.first_seen ?? '') || naturalCompare(a.id, b.id));
        const { items, info } = paginate(found, query.page, query.limit);
        return { body: { devices: items, ...info } };
      },
    },
  ];
}

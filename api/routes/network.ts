/** `/carriers` and `/towers`: the networks' reference data. A carrier operator sees its own only. */
import { z } from 'zod';
import type { Principal } from '../auth.js';
import { route, type ApiContext, type ApiRoute } from '../context.js';
import { id, pageInfo, pageQuery, paginate, naturalCompare } from '../schemas.js';

const carrierShape = z.strictObject({
  id: z.string(),
  name: z.string(),
  mcc: z.string(),
  mnc: z.string(),
  country: z.string(),
  supported_towers: z.array(z.string()),
});
const towerShape = z.strictObject({
  id: z.string(),
  location: z.string(),
  region: z.string(),
  lat: z.number(),
  lon: z.number(),
  carriers: z.array(z.string()),
  carrier_ids: z.array(z.string()),
  status: z.enum(['active', 'inactive']),
});

const ownCarrier = (p: Principal): string | null => (p.account.role === 'carrier_operator' ? p.account.carrier_id : null);

export function networkRoutes(ctx: ApiContext): ApiRoute[] {
  return [
    route({
      method: 'get',
      path: '/carriers',
      tag: 'network',
      summary: 'Carriers and the towers each serves',
      access: 'read',
      query: z.strictObject({ ...pageQuery }),
      response: z.strictObject({ carriers: z.array(carrierShape), ...pageInfo }),
      cacheKey: ({ query, principal }) => `${ctx.view.version}|${ownCarrier(principal)}|${JSON.stringify(query)}`,
      handler: ({ query, principal }) => {
        const mine = ownCarrier(principal);
        const towers = ctx.view.list('tower');
        const carriers = ctx.view
          .list('carrier')
          .filter((c) => mine === null || c.id === mine)
          .sort((a, b) => naturalCompare(a.id, b.id))
          .map((c) => ({
            ...c,
            supported_towers: towers
              .filter((t) => t.carrier_ids.includes(c.id))
              .map((t) => t.id)
              .sort(),
          }));
        const { items, info } = paginate(carriers, query.page, query.limit);
        return { body: { carriers: items, ...info } };
      },
    }),
    route({
      method: 'get',
      path: '/towers',
      tag: 'network',
      summary: 'Cell towers: location, carriers, status',
      access: 'read',
      query: z.strictObject({ ...pageQuery, carrier_id: id.optional(), status: z.enum(['active', 'inactive']).optional() }),
      response: z.strictObject({ towers: z.array(towerShape), ...pageInfo }),
      cacheKey: ({ query, principal }) => `${ctx.view.version}|${ownCarrier(principal)}|${JSON.stringify(query)}`,
      handler: ({ query, principal }) => {
        const mine = ownCarrier(principal);
        const carrierName = (cid: string): string => ctx.view.carrier(cid)?.name ?? cid;
        const towers = ctx.view
          .list('tower')
          .filter(
            (t) =>
              (mine === null || t.carrier_ids.includes(mine)) &&
              (query.carrier_id === undefined || t.carrier_ids.includes(query.carrier_id)) &&
              (query.status === undefined || t.status === query.status),
          )
          .sort((a, b) => naturalCompare(a.id, b.id))
          .map((t) => ({
            id: t.id,
            location: t.location,
            region: t.region,
            lat: t.lat,
            lon: t.lon,
            carriers: t.carrier_ids.map(carrierName),
            carrier_ids: [...t.carrier_ids],
            status: t.status,
          }));
        const { items, info } = paginate(towers, query.page, query.limit);
        return { body: { towers: items, ...info } };
      },
    }),
  ];
}

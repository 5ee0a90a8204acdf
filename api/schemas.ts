/**
 * zod pieces every route shares: ids, pagination, time ranges, and the paging fields of a
 * list reply. Query parameters arrive as strings, so numbers are coerced here.
 */
import { z } from 'zod';
import { ID_PATTERN } from '../core/domain.js';
import { ApiError } from './errors.js';

export const id = z.string().regex(ID_PATTERN, 'must be 1–64 letters, digits, "_" or "-"');
export const MAX_PAGE_LIMIT = 500;
export const DEFAULT_PAGE_LIMIT = 50;

export const pageQuery = {
  page: z.coerce.number().int().min(1).max(1_000_000).default(1),
  limit: z.coerce.number().int().min(1).max(MAX_PAGE_LIMIT).default(DEFAULT_PAGE_LIMIT),
};

/** The paging fields of every list reply. */
export const pageInfo = {
  page: z.number().int(),
  limit: z.number().int(),
  total: z.number().int(),
  next_page: z.number().int().nullable(),
};
export interface PageInfo {
  page: number;
  limit: number;
  total: number;
  next_page: number | null;
}

export function pageOf(page: number, limit: number, total: number): PageInfo {
  return { page, limit, total, next_page: page * limit < total ? page + 1 : null };
}

/** One page of an in-memory list. */
export function paginate<T>(items: readonly T[], page: number, limit: number): { items: T[]; info: PageInfo } {
  return { items: items.slice((page - 1) * limit, page * limit), info: pageOf(page, limit, items.length) };
}

export const isoTime = z.string().describe('ISO 8601 time, UTC');
/** A policy verdict as the api shows it (a rule's or a policy default's; nulls for none). */
export const verdictShape = z.strictObject({
  permission: z.string(),
  rule_id: z.string().nullable(),
  policy_id: z.string().nullable(),
  severity: z.string().nullable(),
  remediation: z.string().nullable(),
});
export const enterpriseQuery = { enterprise_id: id.optional().describe('for carrier operators: which enterprise') };

/** Times a query may name: 2000-01-01 to 2100-01-01 UTC (anything else is a mistake, not a range). */
export const MIN_TIME_MS = Date.UTC(2000, 0, 1);
export const MAX_TIME_MS = Date.UTC(2100, 0, 1);
/** ISO 8601 as `Date.parse` reads it unambiguously: a date, optionally a time and a zone. */
const ISO_TIME = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/i;
const EPOCH_MS = /^\d{1,15}$/;

/**
 * A query time (ISO 8601 or epoch milliseconds) as epoch ms; null when it is neither, or falls
 * outside {@link MIN_TIME_MS}–{@link MAX_TIME_MS}. Strict on purpose: `Date.parse` alone reads
 * `-1` as 2001-01-01 and `1e3` or `Infinity` as whatever it likes.
 */
export function parseQueryTime(s: string): number | null {
  const ms = EPOCH_MS.test(s) ? Number(s) : ISO_TIME.test(s) ? Date.parse(s) : Number.NaN;
  return Number.isFinite(ms) && ms >= MIN_TIME_MS && ms <= MAX_TIME_MS ? ms : null;
}

const queryTime = (what: string) =>
  z
    .string()
    .max(40)
    .refine((s) => parseQueryTime(s) !== null, 'must be ISO 8601 (2026-01-02T03:04:05Z) or epoch milliseconds, between 2000-01-01 and 2100-01-01')
    .describe(what);

/** `from`/`to` as ISO times or epoch ms, or `range` back from now. */
export const timeRangeQuery = {
  from: queryTime('start (ISO 8601 or epoch ms), inclusive').optional(),
  to: queryTime('end (ISO 8601 or epoch ms), exclusive; default now').optional(),
  range: z.enum(['15m', '1h', '6h', '24h', '7d', '30d']).optional().describe('instead of from: this long before `to`'),
};
const RANGE_MS: Readonly<Record<string, number>> = {
  '15m': 15 * 60e3,
  '1h': 3600e3,
  '6h': 6 * 3600e3,
  '24h': 24 * 3600e3,
  '7d': 7 * 24 * 3600e3,
  '30d': 30 * 24 * 3600e3,
};

function parseTime(name: string, s: string): number {
  const ms = parseQueryTime(s);
  if (ms === null)
    throw new ApiError(400, 'validation_failed', `query.${name}: not a time: '${s.slice(0, 40)}'`, [
      { path: `query.${name}`, message: 'must be ISO 8601 or epoch milliseconds, between 2000-01-01 and 2100-01-01', code: 'invalid_format' },
    ]);
  return ms;
}

/** Resolves a time range; `defaultRange` applies when neither `from` nor `range` is given. */
export function resolveRange(
  q: { from?: string | undefined; to?: string | undefined; range?: string | undefined },
  now: number,
  defaultRange: keyof typeof RANGE_MS | string,
): { from: number; to: number } {
  const to = q.to === undefined ? now : parseTime('to', q.to);
  if (q.from !== undefined && q.range !== undefined)
    throw new ApiError(400, 'validation_failed', 'give from or range, not both', [{ path: 'query.range', message: 'conflicts with from', code: 'custom' }]);
  const from = q.from !== undefined ? parseTime('from', q.from) : to - (RANGE_MS[q.range ?? defaultRange] ?? 3600e3);
  if (from >= to)
    throw new ApiError(400, 'validation_failed', 'from must be before to', [{ path: 'query.from', message: 'must be before to', code: 'custom' }]);
  if (to - from > 400 * 24 * 3600e3)
    throw new ApiError(400, 'validation_failed', 'a range may span at most 400 days', [{ path: 'query.from', message: 'range too long', code: 'too_big' }]);
  return { from, to };
}

export const iso = (ms: number): string => new Date(ms).toISOString();

/** `If-Match: "<revision>"` as a revision; undefined when absent. A tag that is no revision never matches. */
export function ifMatchRevision(headers: Readonly<Record<string, string>>): number | undefined {
  const h = headers['if-match'];
  if (h === undefined) return undefined;
  const m = /^\s*(?:W\/)?"(\d+)"\s*$/.exec(h);
  return m?.[1] === undefined ? -1 : Number(m[1]);
}

export const revisionTag = (revision: number): string => `"${revision}"`;

/** Natural order of ids ("tower9" before "tower10"). One collator: building one per compare is slow. */
export const naturalCompare = new Intl.Collator('en', { numeric: true }).compare;

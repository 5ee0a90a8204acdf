/**
 * Parses one line of an EVENTS.jsonl file (the `rules eval` contract) into an EvalEvent,
 * with a message that names the field when the line is wrong.
 */
import { z } from 'zod';
import type { EvalEvent } from './event.js';
import { appKey } from './language.js';

const text = z.string().min(1);
const eventLineSchema = z
  .strictObject({
    role_id: text.optional(),
    role_ids: z.array(text).optional(),
    app_name: text.optional(),
    app_id: text.optional(),
    app_category: text.optional(),
    action: text.optional(),
    action_id: text.optional(),
    tower_id: text.optional(),
    region: text.optional(),
    os: text.optional(),
    os_version: text.optional(),
    ts: z.union([z.number().finite(), z.iso.datetime({ offset: true, local: false })]).optional(),
    bytes_up: z.number().finite().nonnegative().optional(),
    bytes_down: z.number().finite().nonnegative().optional(),
    user_id: text.optional(),
    device_id: text.optional(),
    event_id: z.union([text, z.number()]).optional(),
  })
  .refine((e) => e.role_id !== undefined || e.role_ids !== undefined, { message: 'needs role_id or role_ids', path: ['role_id'] });

export class EventLineError extends Error {
  override readonly name = 'EventLineError';
}

export function parseEventLine(line: string): EvalEvent {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch (err) {
    throw new EventLineError(`not valid JSON (${(err as Error).message})`);
  }
  const result = eventLineSchema.safeParse(json);
  if (!result.success) {
    throw new EventLineError(
      result.error.issues
        .map((i) => `${i.path.length ? i.path.join('.') : 'event'}: ${i.code === 'unrecognized_keys' ? `unknown field ${i.keys.join(', ')}` : i.message}`)
        .join('; '),
    );
  }
  const e = result.data;
  return {
    role_ids: e.role_ids ?? (e.role_id !== undefined ? [e.role_id] : []),
    app: appKey(e.app_name, e.app_id),
    app_category: e.app_category,
    action: e.action ?? e.action_id,
    tower_id: e.tower_id,
    region: e.region,
    os: e.os,
    os_version: e.os_version,
    ts: typeof e.ts === 'string' ? Date.parse(e.ts) : e.ts,
    bytes_up: e.bytes_up,
    bytes_down: e.bytes_down,
  };
}

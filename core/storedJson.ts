/**
 * Reading back what a bucket holds: its JSON checked against the shape the writer meant, since
 * anyone with access to the bucket (an operator, an older or newer version) may have written it.
 */
import type { z } from 'zod';

/** `data` as JSON of `schema`'s shape, or null when it is not JSON or not that shape. */
export function decodeStoredJson<T>(schema: z.ZodType<T>, data: Uint8Array): T | null {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8'));
  } catch {
    return null;
  }
  const parsed = schema.safeParse(value);
  return parsed.success ? parsed.data : null;
}

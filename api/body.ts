/**
 * Reading a request body on uWebSockets.js: chunks arrive as ArrayBuffers that are only valid
 * inside the callback (copied here), the total is capped (413 as soon as it is exceeded, not
 * after buffering it all), and JSON that does not parse is a 400, never a 500.
 */
import type { HttpResponse } from 'uWebSockets.js';
import { ApiError } from './errors.js';

/** Default cap on a request body. */
export const DEFAULT_BODY_LIMIT_BYTES = 64 * 1024;

/**
 * Resolves with the whole body. Rejects with a 413 ApiError when it exceeds `limit`, and with
 * `aborted` set when the client went away (the response must not be used then).
 * Call it synchronously in the route handler, before any await: uWS drops data otherwise.
 */
export function readBody(res: HttpResponse, limit: number, aborted: { value: boolean }): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    res.onData((chunk, isLast) => {
      if (done) return;
      size += chunk.byteLength;
      if (size > limit) {
        done = true;
        reject(new ApiError(413, 'body_too_large', `the request body exceeds ${limit} bytes`, { limit_bytes: limit }));
        return;
      }
      chunks.push(Buffer.from(chunk.slice(0)));
      if (isLast) {
        done = true;
        resolve(Buffer.concat(chunks, size));
      }
    });
    res.onAborted(() => {
      aborted.value = true;
      if (!done) {
        done = true;
        reject(new ApiError(400, 'aborted', 'the client closed the request'));
      }
    });
  });
}

/** Parses a JSON body; an empty body is `undefined`. @throws {ApiError} 400 `malformed_json`. */
export function parseJson(body: Buffer): unknown {
  if (body.byteLength === 0) return undefined;
  try {
    return JSON.parse(body.toString('utf8')) as unknown;
  } catch (err) {
    throw new ApiError(400, 'malformed_json', 'the request body is not valid JSON', {
      reason: err instanceof Error ? err.message : String(err),
    });
  }
}

/**
 * The api's one error shape, `{ "error": { "code", "message", "details" } }`, and the errors
 * handlers throw to produce it. Anything else thrown is a bug: a 500 with no internals shown.
 */

export interface ErrorBody {
  error: { code: string; message: string; details: unknown };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: unknown = null,
    /** Extra response headers (Retry-After, WWW-Authenticate…). */
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): ErrorBody {
    return { error: { code: this.code, message: this.message, details: this.details } };
  }
}

export const badRequest = (code: string, message: string, details: unknown = null): ApiError => new ApiError(400, code, message, details);
export const notFound = (message: string, details: unknown = null): ApiError => new ApiError(404, 'not_found', message, details);

/** Status lines uWS needs spelled out (it writes what it is given). */
export const STATUS_TEXT: Readonly<Record<number, string>> = {
  200: 'OK',
  201: 'Created',
  204: 'No Content',
  304: 'Not Modified',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  412: 'Precondition Failed',
  413: 'Content Too Large',
  415: 'Unsupported Media Type',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

export const statusLine = (status: number): string => `${status} ${STATUS_TEXT[status] ?? ''}`.trimEnd();

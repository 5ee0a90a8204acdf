/** Errors of the control-plane store: one base class with a stable string `code`. */
import { CodedError, type CodeOf } from '../codedError.js';

export const ControlPlaneErrorCode = {
  /** A create found the key taken, or a write's expected revision was stale. */
  Conflict: 'conflict',
  /** The entry to update or delete does not exist. */
  NotFound: 'not_found',
  /** A kind, scope or id cannot form a key (bad characters, reserved scope, missing owner). */
  InvalidKey: 'invalid_key',
  /** A stored value is not JSON of the expected shape. */
  InvalidValue: 'invalid_value',
  /** NATS/JetStream failed or timed out. */
  Unavailable: 'unavailable',
  /** The view or store was closed. */
  Closed: 'closed',
} as const;
export type ControlPlaneErrorCode = CodeOf<typeof ControlPlaneErrorCode>;

export class ControlPlaneError extends CodedError<ControlPlaneErrorCode> {}

export class ConflictError extends ControlPlaneError {
  /** The KV key written. */
  readonly key: string;
  /** Revision the writer expected; 0 for a create. */
  readonly expectedRevision: number;
  constructor(key: string, expectedRevision: number, options?: ErrorOptions) {
    super(
      ControlPlaneErrorCode.Conflict,
      expectedRevision === 0 ? `${key} already exists` : `${key} is no longer at revision ${expectedRevision}: it was changed or deleted meanwhile`,
      options,
    );
    this.key = key;
    this.expectedRevision = expectedRevision;
  }
}

export class NotFoundError extends ControlPlaneError {
  readonly key: string;
  constructor(key: string, options?: ErrorOptions) {
    super(ControlPlaneErrorCode.NotFound, `${key} not found`, options);
    this.key = key;
  }
}

export class InvalidKeyError extends ControlPlaneError {
  constructor(message: string, options?: ErrorOptions) {
    super(ControlPlaneErrorCode.InvalidKey, message, options);
  }
}

export class InvalidValueError extends ControlPlaneError {
  readonly key: string;
  constructor(key: string, message: string, options?: ErrorOptions) {
    super(ControlPlaneErrorCode.InvalidValue, `${key}: ${message}`, options);
    this.key = key;
  }
}

export class UnavailableError extends ControlPlaneError {
  constructor(message: string, options?: ErrorOptions) {
    super(ControlPlaneErrorCode.Unavailable, message, options);
  }
}

export class ClosedError extends ControlPlaneError {
  constructor(what: string) {
    super(ControlPlaneErrorCode.Closed, `${what} is closed`);
  }
}

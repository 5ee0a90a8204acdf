/** Public surface of the control plane: import from here, not from the files beside it. */
export {
  ClosedError,
  ConflictError,
  ControlPlaneError,
  ControlPlaneErrorCode,
  InvalidKeyError,
  InvalidValueError,
  NotFoundError,
  UnavailableError,
} from './errors.js';
export {
  CARRIER_SCOPE,
  defaultScope,
  enterpriseOfRef,
  entityKey,
  GLOBAL_SCOPE,
  isKind,
  KIND_SCOPE,
  KINDS,
  parseEntityKey,
  refOf,
  rolePolicyId,
  scopeFilter,
  userRoleId,
} from './keys.js';
export type { Entity, EntityByKind, EntityRef, Kind, ScopeType } from './keys.js';
export { CONTROL_BUCKET, ControlPlaneStore, DEFAULT_CONTROL_HISTORY, openControlBucket } from './store.js';
export type { AfterWrite, ControlBucketOptions, ControlStoreOptions, StoredEntry, Versioned } from './store.js';
export { ControlPlaneView, DEFAULT_COALESCE_MS, DEFAULT_OPEN_TIMEOUT_MS } from './view.js';
export type { ChangeListener, ControlPlaneChange, ControlPlaneViewOptions } from './view.js';

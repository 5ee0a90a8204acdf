/**
 * The columnar batch layout shared by the generated WASM core and the JS that fills it.
 * Column k of a batch with capacity `cap` starts at `cols + cap × OFFSET[k]`.
 */
export const COLUMN_OFFSET = {
  /** u64 role bit mask (little-endian u32 pair). */
  roles: 0,
  app: 8,
  action: 12,
  tower: 16,
  region: 20,
  os: 24,
  /** Comparable OS version (see parseOsVersion); UNKNOWN_VERSION when unknown. */
  osVersion: 28,
  /** Local minute of week; UNKNOWN_MINUTE when the event has no ts. */
  minuteOfWeek: 32,
  /** f64 */
  bytesUp: 36,
  /** f64 */
  bytesDown: 44,
  /** u32 winning rank, written by the core. */
  out: 52,
} as const;

export const BYTES_PER_EVENT = 56;
/** Capacities are rounded to this so every f64 column stays 8-byte aligned. */
export const CAPACITY_ALIGN = 16;
export const UNKNOWN_VERSION = 0xffffffff;

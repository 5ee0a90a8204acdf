/**
 * The wire format every part of towerwatch speaks: MessagePack messages on the subjects
 * `usage.<carrier>.<tower>` and `discovery.<carrier>.<tower>`. docs/wire-format.md is the
 * reference for carriers; this file is the codec.
 *
 * Decoding is the pipeline's hottest path. A usage frame in the canonical form the encoder
 * writes is read straight from the bytes (the fast route); anything else is unpacked by msgpackr
 * and validated with plain `typeof`/integer checks in one loop (the general route), building an
 * error message only for a value that failed. The decoders never throw: any input gives a typed
 * result.
 */
import { createHash } from 'node:crypto';
import { C1, Packr, Unpackr } from 'msgpackr';
import { ID_PATTERN, type DiscoveryReport, type UsageEvent } from './domain.js';
import { CodedError, type CodeOf } from './codedError.js';

/** The version this codec writes and the only one it reads. */
export const WIRE_VERSION = 1;
/** Most events (or discovery reports) one frame may carry. */
export const MAX_FRAME_EVENTS = 10_000;
/** Most entries a frame's string table may hold. */
export const MAX_FRAME_STRINGS = 65_536;
/** Longest device, app, action, model, os or os_version string, in UTF-16 code units. */
export const MAX_STRING_LENGTH = 128;
/** ts bounds (ms): catch seconds or microseconds sent by mistake, which would be valid numbers. */
export const MIN_TS = Date.UTC(2000, 0, 1);
export const MAX_TS = Date.UTC(2100, 0, 1);

export const MESSAGE_TYPES = {
  usage: 'usage',
  usageFrame: 'usage_frame',
  discovery: 'discovery',
  discoveryFrame: 'discovery_frame',
} as const;
export type MessageType = (typeof MESSAGE_TYPES)[keyof typeof MESSAGE_TYPES];

/** Stable codes for why a message or one event of it was rejected. Listed in docs/wire-format.md. */
export const DECODE_ERROR = {
  /** The bytes are not one complete MessagePack value (truncated, trailing bytes, bad ext…). */
  notMsgpack: 'not_msgpack',
  /** The value is not a map. */
  notAMap: 'not_a_map',
  /** `v` is not a version this reader speaks. */
  unknownVersion: 'unknown_version',
  /** `type` is not one this decoder accepts (e.g. a discovery message on a usage subject). */
  unknownType: 'unknown_type',
  /** A required field is absent or nil. */
  missingField: 'missing_field',
  /** A field has the wrong type or is out of its range. */
  badField: 'bad_field',
  /** A frame row is not an array of the right length. */
  badEvent: 'bad_event',
  /** A frame with no events. */
  emptyFrame: 'empty_frame',
  /** A frame with more than MAX_FRAME_EVENTS events. */
  tooManyEvents: 'too_many_events',
} as const;
export type DecodeErrorCode = (typeof DECODE_ERROR)[keyof typeof DECODE_ERROR];
export const DECODE_ERROR_CODES: readonly DecodeErrorCode[] = Object.values(DECODE_ERROR);

/** Why the whole message was rejected: it goes to the dead-letter stream as is. */
export interface DecodeFailure {
  ok: false;
  code: DecodeErrorCode;
  message: string;
}

/** One event (or report) of an otherwise good message that was rejected. */
export interface EventRejection {
  /** Position in the frame's `events` (or `reports`); 0 for a single-event message. */
  index: number;
  code: DecodeErrorCode;
  message: string;
  /** The event's id when it was readable: lets the dead-letter consumer name the event. */
  event_id?: number;
}

export type UsageDecodeResult = { ok: true; events: UsageEvent[]; rejected: EventRejection[] } | DecodeFailure;

export type DiscoveryDecodeResult = { ok: true; reports: DiscoveryReport[]; rejected: EventRejection[] } | DecodeFailure;

export const ENCODE_ERROR = {
  emptyFrame: 'empty_frame',
  tooManyEvents: 'too_many_events',
  mixedFrame: 'mixed_frame',
} as const;
export type EncodeErrorCode = CodeOf<typeof ENCODE_ERROR>;

/** Thrown by the frame encoders for a frame the decoder would reject as a whole. */
export class WireEncodeError extends CodedError<EncodeErrorCode> {}

export interface FrameEncodeOptions {
  /**
   * Write device/app/action (and model/os/…) once in the frame's `strings` table and refer to
   * them by index: about half the bytes and a faster decode (see docs/wire-format.md).
   * @default true
   */
  stringTable?: boolean;
}

/** Positional layout of one row of a usage frame. */
export const USAGE_ROW = ['event_id', 'ts', 'device', 'app', 'action', 'bytes_up', 'bytes_down'] as const;
/** Positional layout of one row of a discovery frame; `enterprise` may be nil or left off. */
export const DISCOVERY_ROW = ['ts', 'device', 'model', 'os', 'os_version', 'first_seen', 'enterprise'] as const;

// These options did not change decode speed measurably; they are for correctness.
// useRecords: false keeps the output plain MessagePack (records are a msgpackr extension other
// libraries cannot read); mapsAsObjects: plain objects (an option-less Unpackr returns Maps);
// int64AsType 'number': other libraries write large values (ts) as uint64, which msgpackr would
// otherwise return as BigInt.
const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });

// ───────────────────────────── encoding ─────────────────────────────

/** One usage event as a single message. */
export function encodeUsageEvent(e: UsageEvent): Uint8Array {
  return pack({
    v: WIRE_VERSION,
    type: MESSAGE_TYPES.usage,
    event_id: e.event_id,
    ts: e.ts,
    carrier: e.carrier,
    tower: e.tower,
    device: e.device,
    app: e.app,
    action: e.action,
    bytes_up: e.bytes_up,
    bytes_down: e.bytes_down,
  });
}

/**
 * A frame of usage events from one tower of one carrier. Throws WireEncodeError when the frame
 * is empty, too large, or holds an event of another carrier or tower.
 */
export function encodeUsageFrame(carrier: string, tower: string, events: readonly UsageEvent[], options: FrameEncodeOptions = {}): Uint8Array {
  checkFrameSize(events.length, 'events');
  const table = options.stringTable === false ? null : new StringTable();
  const rows = new Array<unknown[]>(events.length);
  for (let i = 0; i < events.length; i++) {
    const e = events[i] as UsageEvent;
    if (e.carrier !== carrier || e.tower !== tower) throw mixedFrame(i, e.carrier, e.tower, carrier, tower);
    rows[i] = table
      ? [e.event_id, e.ts, table.ref(e.device), table.ref(e.app), table.ref(e.action), e.bytes_up, e.bytes_down]
      : [e.event_id, e.ts, e.device, e.app, e.action, e.bytes_up, e.bytes_down];
  }
  return pack(
    table
      ? { v: WIRE_VERSION, type: MESSAGE_TYPES.usageFrame, carrier, tower, strings: table.strings, events: rows }
      : { v: WIRE_VERSION, type: MESSAGE_TYPES.usageFrame, carrier, tower, events: rows },
  );
}

/** One discovery report as a single message. */
export function encodeDiscovery(r: DiscoveryReport): Uint8Array {
  const msg: Record<string, unknown> = {
    v: WIRE_VERSION,
    type: MESSAGE_TYPES.discovery,
    ts: r.ts,
    carrier: r.carrier,
    tower: r.tower,
    device: r.device,
    model: r.model,
    os: r.os,
    os_version: r.os_version,
    first_seen: r.first_seen,
  };
  if (r.enterprise !== undefined) msg['enterprise'] = r.enterprise;
  return pack(msg);
}

/** A frame of discovery reports from one tower of one carrier. Throws like encodeUsageFrame. */
export function encodeDiscoveryFrame(carrier: string, tower: string, reports: readonly DiscoveryReport[], options: FrameEncodeOptions = {}): Uint8Array {
  checkFrameSize(reports.length, 'reports');
  const table = options.stringTable === false ? null : new StringTable();
  const s = (text: string): string | number => (table ? table.ref(text) : text);
  const rows = new Array<unknown[]>(reports.length);
  for (let i = 0; i < reports.length; i++) {
    const r = reports[i] as DiscoveryReport;
    if (r.carrier !== carrier || r.tower !== tower) throw mixedFrame(i, r.carrier, r.tower, carrier, tower);
    rows[i] = [r.ts, s(r.device), s(r.model), s(r.os), s(r.os_version), r.first_seen, r.enterprise === undefined ? null : s(r.enterprise)];
  }
  return pack(
    table
      ? { v: WIRE_VERSION, type: MESSAGE_TYPES.discoveryFrame, carrier, tower, strings: table.strings, reports: rows }
      : { v: WIRE_VERSION, type: MESSAGE_TYPES.discoveryFrame, carrier, tower, reports: rows },
  );
}

/**
 * The `Nats-Msg-Id` for a usage message: `<carrier>:<tower>:<first event_id>-<last event_id>`.
 * The carrier is part of it because towers are shared (tower123 is served by AT&T and
 * Verizon) and each carrier's gateway numbers its own events.
 */
export function usageMsgId(carrier: string, tower: string, events: readonly Pick<UsageEvent, 'event_id'>[]): string {
  const first = events[0];
  const last = events[events.length - 1];
  if (first === undefined || last === undefined) throw new WireEncodeError(ENCODE_ERROR.emptyFrame, 'a message id needs at least one event');
  return `${carrier}:${tower}:${first.event_id}-${last.event_id}`;
}

/**
 * The `Nats-Msg-Id` for a discovery message: reports have no sequence number, so the id is
 * the payload's SHA-256 (deterministic encoding makes a resend byte-identical).
 */
export function discoveryMsgId(carrier: string, tower: string, payload: Uint8Array): string {
  return `${carrier}:${tower}:${createHash('sha256').update(payload).digest('hex').slice(0, 32)}`;
}

/** Interns strings of one frame in order of first use. */
class StringTable {
  readonly strings: string[] = [];
  readonly #index = new Map<string, number>();
  ref(text: string): number {
    let i = this.#index.get(text);
    if (i === undefined) {
      i = this.strings.length;
      this.strings.push(text);
      this.#index.set(text, i);
    }
    return i;
  }
}

function checkFrameSize(n: number, what: string): void {
  if (n === 0) throw new WireEncodeError(ENCODE_ERROR.emptyFrame, `a frame needs at least one of ${what}`);
  if (n > MAX_FRAME_EVENTS) {
    throw new WireEncodeError(ENCODE_ERROR.tooManyEvents, `a frame holds at most ${MAX_FRAME_EVENTS} ${what}, got ${n}: split it`);
  }
}

function mixedFrame(i: number, carrier: string, tower: string, frameCarrier: string, frameTower: string): WireEncodeError {
  return new WireEncodeError(
    ENCODE_ERROR.mixedFrame,
    `item ${i} is from ${carrier}/${tower} but the frame is for ${frameCarrier}/${frameTower}: a frame comes from one tower of one carrier`,
  );
}

/**
 * Packs into an owned copy: msgpackr returns a view into a buffer it keeps reusing, and a
 * caller that transfers `bytes.buffer` to a worker would detach the encoder's buffer.
 */
function pack(value: unknown): Uint8Array {
  const view = packr.pack(value);
  const out = new Uint8Array(view.length);
  out.set(view);
  return out;
}

// ───────────────────────────── decoding ─────────────────────────────

type Wire = Record<string, unknown>;

const USAGE_TYPES: readonly string[] = [MESSAGE_TYPES.usage, MESSAGE_TYPES.usageFrame];
const DISCOVERY_TYPES: readonly string[] = [MESSAGE_TYPES.discovery, MESSAGE_TYPES.discoveryFrame];

/** Decodes a usage message (single event or frame). Never throws. */
export function decodeUsage(bytes: Uint8Array): UsageDecodeResult {
  if (bytes instanceof Uint8Array && hasFramePrefix(bytes)) {
    const fast = decodeCanonicalUsageFrame(bytes);
    if (fast !== null) return fast;
  }
  return decodeUsageGeneral(bytes);
}

/**
 * The general decoder: msgpackr, then validation of every field. Gives the same result as
 * decodeUsage for every input (decodeUsage only adds a faster route for the common case).
 * @internal exported for the differential tests
 */
export function decodeUsageGeneral(bytes: Uint8Array): UsageDecodeResult {
  const env = readEnvelope(bytes, USAGE_TYPES);
  if (env instanceof Failure) return env.result();
  const { msg, carrier, tower } = env;
  if (env.type === MESSAGE_TYPES.usage) {
    const [id, ts, device, app, action, up, down] = [msg['event_id'], msg['ts'], msg['device'], msg['app'], msg['action'], msg['bytes_up'], msg['bytes_down']];
    if (usageValid(id, ts, device, app, action, up, down)) {
      return { ok: true, events: [usageEvent(id, ts, carrier, tower, device, app, action, up, down)], rejected: [] };
    }
    return { ok: true, events: [], rejected: [diagnoseUsage(0, '', null, id, ts, device, app, action, up, down)] };
  }

  const frame = readFrameBody(msg, 'events');
  if (frame instanceof Failure) return frame.result();
  const { rows, strings } = frame;
  const n = rows.length;
  const events: UsageEvent[] = [];
  const rejected: EventRejection[] = [];
  for (let i = 0; i < n; i++) {
    const row = rows[i];
    if (Array.isArray(row) && row.length === 7) {
      const id: unknown = row[0];
      const ts: unknown = row[1];
      // A string field is the string itself or an index into the frame's table; an index
      // out of range (or a non-integer) reads as undefined and fails the check below.
      let device: unknown = row[2];
      if (typeof device === 'number' && strings !== null) device = strings[device];
      let app: unknown = row[3];
      if (typeof app === 'number' && strings !== null) app = strings[app];
      let action: unknown = row[4];
      if (typeof action === 'number' && strings !== null) action = strings[action];
      const up: unknown = row[5];
      const down: unknown = row[6];
      if (usageValid(id, ts, device, app, action, up, down)) {
        events.push(usageEvent(id, ts, carrier, tower, device, app, action, up, down));
        continue;
      }
      rejected.push(diagnoseUsage(i, `events[${i}].`, strings, id, ts, row[2], row[3], row[4], up, down));
      continue;
    }
    rejected.push(badRow(i, 'events', row, USAGE_ROW, 7, 7));
  }
  return { ok: true, events, rejected };
}

// ── The fast route ──
//
// A frame as encodeUsageFrame writes it (string table, keys in the order v, type, carrier,
// tower, strings, events, every event valid) is read straight from the bytes into events,
// without msgpackr building an array per row: about 2.4× the events/s of the general route
// (docs/wire-format.md). Anything else — another key order, inline strings, a non-ASCII string,
// an invalid event, an unexpected encoding — returns null and takes the general route, which
// is the reference: the differential tests check both give the same result.

/** `"v": 1, "type": "usage_frame"`, the bytes after the map header of a canonical frame. */
const FRAME_PREFIX = Uint8Array.from([0xa1, 0x76, 0x01, 0xa4, ...Buffer.from('type'), 0xab, ...Buffer.from('usage_frame')]);

/** A six-key map that starts like a canonical frame: only those try the fast route (a single event costs nothing extra). */
function hasFramePrefix(buf: Uint8Array): boolean {
  // fixmap of 6 (most msgpack libraries) or map16 of 6 (msgpackr)
  const start = buf[0] === 0x86 ? 1 : buf[0] === 0xde && buf[1] === 0 && buf[2] === 6 ? 3 : -1;
  if (start < 0 || buf.length < start + FRAME_PREFIX.length) return false;
  for (let i = 0; i < FRAME_PREFIX.length; i++) if (buf[start + i] !== FRAME_PREFIX[i]) return false;
  return true;
}

const KEY_V = 1;
const KEY_TYPE = 2;
const KEY_CARRIER = 4;
const KEY_TOWER = 8;
const KEY_STRINGS = 16;
const KEY_EVENTS = 32;

/**
 * The fast route alone: null when the input is not a canonical, all-valid frame.
 * @internal exported for the differential tests
 */
export function decodeCanonicalUsageFrame(buf: Uint8Array): UsageDecodeResult | null {
  try {
    return readCanonicalUsageFrame(buf);
  } catch {
    return null; // a read past the end (DataView throws): let the general route describe it
  }
}

function readCanonicalUsageFrame(buf: Uint8Array): UsageDecodeResult | null {
  const len = buf.length;
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let pos = 0;

  /** An unsigned integer or float64; undefined for any other type. */
  const num = (): number | undefined => {
    const b = buf[pos++] as number;
    if (b < 0x80) return b;
    let v: number;
    switch (b) {
      case 0xcc:
        return buf[pos++];
      case 0xcd:
        v = view.getUint16(pos);
        pos += 2;
        return v;
      case 0xce:
        v = view.getUint32(pos);
        pos += 4;
        return v;
      case 0xcf:
        // As msgpackr with int64AsType 'number': exact up to 2^53, rounded above (then rejected).
        v = view.getUint32(pos) * 0x1_0000_0000 + view.getUint32(pos + 4);
        pos += 8;
        return v;
      case 0xcb:
        v = view.getFloat64(pos);
        pos += 8;
        return v;
      default:
        return undefined;
    }
  };

  /** A fixstr or str8 of ASCII; undefined otherwise (non-ASCII goes the general route, which decodes UTF-8). */
  const ascii = (): string | undefined => {
    const b = buf[pos] as number;
    let n: number;
    if ((b & 0xe0) === 0xa0) {
      n = b & 0x1f;
      pos += 1;
    } else if (b === 0xd9) {
      n = buf[pos + 1] as number;
      pos += 2;
    } else {
      return undefined;
    }
    const end = pos + n;
    if (!(end <= len)) return undefined;
    for (let i = pos; i < end; i++) if ((buf[i] as number) > 0x7f) return undefined;
    const text = String.fromCharCode.apply(null, buf.subarray(pos, end) as unknown as number[]);
    pos = end;
    return text;
  };

  /** An array header's length; -1 if the next value is not an array. */
  const arrayLength = (): number => {
    const b = buf[pos++] as number;
    if ((b & 0xf0) === 0x90) return b & 0x0f;
    if (b === 0xdc) {
      pos += 2;
      return view.getUint16(pos - 2);
    }
    if (b === 0xdd) {
      pos += 4;
      return view.getUint32(pos - 4);
    }
    return -1;
  };

  const head = buf[pos++] as number;
  let keys: number;
  if ((head & 0xf0) === 0x80) keys = head & 0x0f;
  else if (head === 0xde) {
    keys = view.getUint16(pos);
    pos += 2;
  } else return null;

  let seen = 0;
  let carrier: string | undefined;
  let tower: string | undefined;
  let strings: string[] | null = null;
  let events: UsageEvent[] | null = null;
  for (let k = 0; k < keys; k++) {
    const key = ascii();
    let bit: number;
    switch (key) {
      case 'v':
        bit = KEY_V;
        if (num() !== WIRE_VERSION) return null;
        break;
      case 'type':
        bit = KEY_TYPE;
        if (ascii() !== MESSAGE_TYPES.usageFrame) return null;
        break;
      case 'carrier':
        bit = KEY_CARRIER;
        carrier = ascii();
        if (carrier === undefined || !ID_PATTERN.test(carrier)) return null;
        break;
      case 'tower':
        bit = KEY_TOWER;
        tower = ascii();
        if (tower === undefined || !ID_PATTERN.test(tower)) return null;
        break;
      case 'strings': {
        bit = KEY_STRINGS;
        if (seen & KEY_EVENTS) return null;
        const n = arrayLength();
        if (n < 0 || n > MAX_FRAME_STRINGS) return null;
        strings = new Array<string>(n);
        for (let i = 0; i < n; i++) {
          const text = ascii();
          if (text === undefined || text.length === 0 || text.length > MAX_STRING_LENGTH) return null;
          strings[i] = text;
        }
        break;
      }
      case 'events': {
        bit = KEY_EVENTS;
        // Every event carries carrier and tower: they must be known before the rows.
        if ((seen & (KEY_V | KEY_TYPE | KEY_CARRIER | KEY_TOWER)) !== (KEY_V | KEY_TYPE | KEY_CARRIER | KEY_TOWER) || strings === null) return null;
        const c = carrier as string;
        const t = tower as string;
        const table = strings;
        const n = arrayLength();
        if (n < 1 || n > MAX_FRAME_EVENTS) return null;
        const out = new Array<UsageEvent>(n);
        for (let i = 0; i < n; i++) {
          if (buf[pos++] !== 0x97) return null; // a fixarray of 7
          const id = num();
          const ts = num();
          // String fields are table indexes here (an inline string takes the general route).
          const di = num();
          const ai = num();
          const xi = num();
          const up = num();
          const down = num();
          const device = table[di as number];
          const app = table[ai as number];
          const action = table[xi as number];
          if (!(validCount(id) && validTs(ts) && device !== undefined && app !== undefined && action !== undefined && validCount(up) && validCount(down))) {
            return null;
          }
          out[i] = { event_id: id, ts, carrier: c, tower: t, device, app, action, bytes_up: up, bytes_down: down };
        }
        events = out;
        break;
      }
      default:
        return null; // an unknown key: the general route skips it
    }
    if (seen & bit) return null; // a repeated key: the general route applies msgpackr's last-wins
    seen |= bit;
  }
  if (pos !== len || events === null) return null;
  return { ok: true, events, rejected: [] };
}

/** Decodes a discovery message (single report or frame). Never throws. */
export function decodeDiscovery(bytes: Uint8Array): DiscoveryDecodeResult {
  const env = readEnvelope(bytes, DISCOVERY_TYPES);
  if (env instanceof Failure) return env.result();
  const { msg, carrier, tower } = env;
  if (env.type === MESSAGE_TYPES.discovery) {
    const values = [msg['ts'], msg['device'], msg['model'], msg['os'], msg['os_version'], msg['first_seen'], msg['enterprise']];
    const report = discoveryOf(carrier, tower, values, null);
    return report ? { ok: true, reports: [report], rejected: [] } : { ok: true, reports: [], rejected: [diagnoseDiscovery(0, '', null, values)] };
  }

  const frame = readFrameBody(msg, 'reports');
  if (frame instanceof Failure) return frame.result();
  const { rows, strings } = frame;
  const reports: DiscoveryReport[] = [];
  const rejected: EventRejection[] = [];
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i];
    if (Array.isArray(row) && (row.length === 6 || row.length === 7)) {
      const report = discoveryOf(carrier, tower, row, strings);
      if (report) reports.push(report);
      else rejected.push(diagnoseDiscovery(i, `reports[${i}].`, strings, row));
      continue;
    }
    rejected.push(badRow(i, 'reports', row, DISCOVERY_ROW, 6, 7));
  }
  return { ok: true, reports, rejected };
}

/** A whole-message failure; a class so `instanceof` tells it from a good value without a tag field. */
class Failure {
  constructor(
    readonly code: DecodeErrorCode,
    readonly message: string,
  ) {}
  result(): DecodeFailure {
    return { ok: false, code: this.code, message: this.message };
  }
}

interface Envelope {
  msg: Wire;
  type: string;
  carrier: string;
  tower: string;
}

function readEnvelope(bytes: Uint8Array, types: readonly string[]): Envelope | Failure {
  if (!(bytes instanceof Uint8Array)) return new Failure(DECODE_ERROR.notMsgpack, `expected bytes (Uint8Array), got ${describe(bytes)}`);
  if (bytes.length === 0) return new Failure(DECODE_ERROR.notMsgpack, 'empty message');
  let value: unknown;
  try {
    value = unpackr.unpack(bytes);
  } catch (error) {
    // msgpackr reports truncation, trailing bytes and unknown extensions by throwing.
    const reason = error instanceof Error ? error.message : String(error);
    return new Failure(DECODE_ERROR.notMsgpack, `not a MessagePack value: ${clip(reason, 160)}`);
  }
  // 0xc1 is "never used" in MessagePack; msgpackr reads it as a marker object instead of
  // failing. Only inputs holding that byte somewhere (a native scan) are walked for one.
  if (bytes.includes(0xc1) && holdsC1(value)) return new Failure(DECODE_ERROR.notMsgpack, 'not a MessagePack value: byte 0xc1 is never used in MessagePack');
  if (value === null || typeof value !== 'object' || Object.getPrototypeOf(value) !== Object.prototype) {
    return new Failure(DECODE_ERROR.notAMap, `a message must be a MessagePack map, got ${describe(value)}`);
  }
  const msg = value as Wire;
  const v = msg['v'];
  if (v === undefined || v === null) return new Failure(DECODE_ERROR.missingField, `v is required (the wire version, ${WIRE_VERSION})`);
  if (v !== WIRE_VERSION) return new Failure(DECODE_ERROR.unknownVersion, `v ${describe(v)} is not supported: this reader speaks v${WIRE_VERSION}`);
  const type = msg['type'];
  if (type === undefined || type === null) return new Failure(DECODE_ERROR.missingField, `type is required (one of ${types.join(', ')})`);
  if (typeof type !== 'string' || !types.includes(type)) {
    return new Failure(DECODE_ERROR.unknownType, `type must be one of ${types.join(', ')}, got ${describe(type)}`);
  }
  const carrier = msg['carrier'];
  const tower = msg['tower'];
  const bad = checkId('carrier', carrier) ?? checkId('tower', tower);
  if (bad) return bad;
  return { msg, type, carrier: carrier as string, tower: tower as string };
}

/** Whether msgpackr's marker for the byte 0xc1 is anywhere in a decoded value (iterative: nesting may be deep). */
function holdsC1(root: unknown): boolean {
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const v = stack.pop();
    if (v === C1) return true;
    if (v === null || typeof v !== 'object' || v instanceof Uint8Array) continue;
    if (Array.isArray(v)) for (const x of v) stack.push(x);
    else for (const k in v as Wire) stack.push((v as Wire)[k]);
  }
  return false;
}

function checkId(field: string, value: unknown): Failure | null {
  if (value === undefined || value === null) return new Failure(DECODE_ERROR.missingField, `${field} is required`);
  if (typeof value !== 'string' || !ID_PATTERN.test(value)) {
    return new Failure(DECODE_ERROR.badField, `${field} must be 1–64 letters, digits, "_" or "-", got ${describe(value)}`);
  }
  return null;
}

function readFrameBody(msg: Wire, key: 'events' | 'reports'): { rows: unknown[]; strings: string[] | null } | Failure {
  const rows = msg[key];
  if (rows === undefined || rows === null) return new Failure(DECODE_ERROR.missingField, `${key} is required in a frame`);
  if (!Array.isArray(rows)) return new Failure(DECODE_ERROR.badField, `${key} must be an array of rows, got ${describe(rows)}`);
  if (rows.length === 0) return new Failure(DECODE_ERROR.emptyFrame, `${key} is empty: a frame carries at least one`);
  if (rows.length > MAX_FRAME_EVENTS) {
    return new Failure(DECODE_ERROR.tooManyEvents, `${key} has ${rows.length} rows; a frame carries at most ${MAX_FRAME_EVENTS}`);
  }
  const strings = msg['strings'];
  if (strings === undefined || strings === null) return { rows, strings: null };
  if (!Array.isArray(strings)) return new Failure(DECODE_ERROR.badField, `strings must be an array of strings, got ${describe(strings)}`);
  if (strings.length > MAX_FRAME_STRINGS) {
    return new Failure(DECODE_ERROR.badField, `strings has ${strings.length} entries; at most ${MAX_FRAME_STRINGS}`);
  }
  for (let i = 0; i < strings.length; i++) {
    if (!validString(strings[i])) return new Failure(DECODE_ERROR.badField, `strings[${i}] ${STRING_RULE}, got ${describe(strings[i])}`);
  }
  return { rows, strings: strings as string[] };
}

// The fast checks. Number.isSafeInteger is false for NaN, ±Infinity, fractions and non-numbers.

function validString(s: unknown): s is string {
  return typeof s === 'string' && s.length !== 0 && s.length <= MAX_STRING_LENGTH;
}

function validCount(n: unknown): n is number {
  return Number.isSafeInteger(n) && (n as number) >= 0;
}

function validTs(n: unknown): n is number {
  return Number.isSafeInteger(n) && (n as number) >= MIN_TS && (n as number) < MAX_TS;
}

function usageValid(id: unknown, ts: unknown, device: unknown, app: unknown, action: unknown, up: unknown, down: unknown): boolean {
  return validCount(id) && validTs(ts) && validString(device) && validString(app) && validString(action) && validCount(up) && validCount(down);
}

/** Builds the event once usageValid has passed: the casts are what that check proved. */
function usageEvent(
  id: unknown,
  ts: unknown,
  carrier: string,
  tower: string,
  device: unknown,
  app: unknown,
  action: unknown,
  up: unknown,
  down: unknown,
): UsageEvent {
  return {
    event_id: id as number,
    ts: ts as number,
    carrier,
    tower,
    device: device as string,
    app: app as string,
    action: action as string,
    bytes_up: up as number,
    bytes_down: down as number,
  };
}

function discoveryOf(carrier: string, tower: string, values: readonly unknown[], strings: string[] | null): DiscoveryReport | null {
  const ts = values[0];
  const device = deref(values[1], strings);
  const model = deref(values[2], strings);
  const os = deref(values[3], strings);
  const osVersion = deref(values[4], strings);
  const firstSeen = values[5];
  const enterprise = deref(values[6], strings);
  if (!validTs(ts) || !validString(device) || !validString(model) || !validString(os) || !validString(osVersion) || typeof firstSeen !== 'boolean') {
    return null;
  }
  const report: DiscoveryReport = { ts, carrier, tower, device, model, os, os_version: osVersion, first_seen: firstSeen };
  if (enterprise !== undefined && enterprise !== null) {
    if (typeof enterprise !== 'string' || !ID_PATTERN.test(enterprise)) return null;
    report.enterprise = enterprise;
  }
  return report;
}

function deref(value: unknown, strings: readonly string[] | null): unknown {
  return typeof value === 'number' && strings !== null ? strings[value] : value;
}

// The slow path: find the first bad field of a rejected event and say precisely what is wrong.

const STRING_RULE = `must be a non-empty string of at most ${MAX_STRING_LENGTH} characters`;
const COUNT_RULE = 'must be a non-negative integer';
const TS_RULE = 'must be integer milliseconds since the epoch between 2000-01-01 and 2100-01-01';

type Check = [field: string, value: unknown, kind: 'count' | 'ts' | 'string' | 'boolean' | 'enterprise'];

function diagnoseUsage(
  index: number,
  where: string,
  strings: readonly string[] | null,
  id: unknown,
  ts: unknown,
  device: unknown,
  app: unknown,
  action: unknown,
  up: unknown,
  down: unknown,
): EventRejection {
  const checks: Check[] = [
    ['event_id', id, 'count'],
    ['ts', ts, 'ts'],
    ['device', device, 'string'],
    ['app', app, 'string'],
    ['action', action, 'string'],
    ['bytes_up', up, 'count'],
    ['bytes_down', down, 'count'],
  ];
  return diagnose(index, where, strings, checks, validCount(id) ? id : undefined);
}

function diagnoseDiscovery(index: number, where: string, strings: readonly string[] | null, values: readonly unknown[]): EventRejection {
  const checks: Check[] = [
    ['ts', values[0], 'ts'],
    ['device', values[1], 'string'],
    ['model', values[2], 'string'],
    ['os', values[3], 'string'],
    ['os_version', values[4], 'string'],
    ['first_seen', values[5], 'boolean'],
    ['enterprise', values[6], 'enterprise'],
  ];
  return diagnose(index, where, strings, checks, undefined);
}

function diagnose(index: number, where: string, strings: readonly string[] | null, checks: readonly Check[], eventId: number | undefined): EventRejection {
  const reject = (code: DecodeErrorCode, message: string): EventRejection =>
    eventId === undefined ? { index, code, message } : { index, code, message, event_id: eventId };
  for (const [field, raw, kind] of checks) {
    const at = `${where}${field}`;
    if (raw === undefined || raw === null) {
      if (kind === 'enterprise') continue; // optional
      return reject(DECODE_ERROR.missingField, `${at} is required`);
    }
    let value: unknown = raw;
    if ((kind === 'string' || kind === 'enterprise') && typeof raw === 'number' && strings !== null) {
      value = strings[raw];
      if (value === undefined) {
        return reject(DECODE_ERROR.badField, `${at} refers to strings[${describe(raw)}], but strings has ${strings.length} entries`);
      }
    }
    switch (kind) {
      case 'count':
        if (!validCount(value)) return reject(DECODE_ERROR.badField, `${at} ${COUNT_RULE}, got ${describe(value)}`);
        break;
      case 'ts':
        if (!validTs(value)) return reject(DECODE_ERROR.badField, `${at} ${TS_RULE}, got ${describe(value)}${tsHint(value)}`);
        break;
      case 'string':
        if (!validString(value)) return reject(DECODE_ERROR.badField, `${at} ${STRING_RULE}, got ${describe(value)}`);
        break;
      case 'boolean':
        if (typeof value !== 'boolean') return reject(DECODE_ERROR.badField, `${at} must be true or false, got ${describe(value)}`);
        break;
      case 'enterprise':
        if (typeof value !== 'string' || !ID_PATTERN.test(value)) {
          return reject(DECODE_ERROR.badField, `${at} must be an enterprise id (1–64 letters, digits, "_" or "-") or nil, got ${describe(value)}`);
        }
        break;
    }
  }
  // Unreachable while the fast and slow checks agree; kept so a mismatch still yields a result.
  return reject(DECODE_ERROR.badField, `${where || 'event'} is invalid`);
}

function badRow(index: number, key: string, row: unknown, layout: readonly string[], min: number, max: number): EventRejection {
  const count = min === max ? `${min}` : `${min} or ${max}`;
  return {
    index,
    code: DECODE_ERROR.badEvent,
    message: `${key}[${index}] must be an array of ${count} values [${layout.join(', ')}], got ${describe(row)}`,
  };
}

function tsHint(value: unknown): string {
  if (typeof value !== 'number' || !Number.isFinite(value)) return '';
  if (value * 1000 >= MIN_TS && value * 1000 < MAX_TS) return ' (seconds? ts is in milliseconds)';
  if (value / 1000 >= MIN_TS && value / 1000 < MAX_TS) return ' (microseconds? ts is in milliseconds)';
  return '';
}

/** A short, safe rendering of any decoded value for error messages. */
function describe(value: unknown): string {
  switch (typeof value) {
    case 'number':
      return Object.is(value, -0) ? '-0' : String(value);
    case 'string':
      return value.length > MAX_STRING_LENGTH
        ? `a string of ${value.length} characters`
        : value.length === 0
          ? 'an empty string'
          : JSON.stringify(clip(value, 40));
    case 'boolean':
      return String(value);
    case 'bigint':
      return `${value}n`;
    case 'undefined':
      return 'nothing';
    case 'object':
      if (value === null) return 'nil';
      if (Array.isArray(value)) return `an array of ${value.length}`;
      if (value instanceof Uint8Array) return `binary data of ${value.length} bytes`;
      if (value instanceof Date) return 'a timestamp extension';
      if (Object.getPrototypeOf(value) === Object.prototype) return 'a map';
      return `a ${(value as { constructor?: { name?: string } }).constructor?.name ?? 'value'}`;
    default:
      return typeof value;
  }
}

function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/**
 * Checks for components' tuning options. Each takes the option's name, the value given and
 * its default: an absent or explicitly `undefined` value gets the default (so `{ ...opts }`
 * with `opts.x = undefined` cannot wipe it out), and a value of the wrong kind throws an error
 * that names the option, when the component is made rather than on its first batch.
 */

/** An integer ≥ `min`. @throws {TypeError} not a number @throws {RangeError} out of range or not whole */
export function integerOption(name: string, value: number | undefined, fallback: number, min = 1): number {
  const v = value ?? fallback;
  if (typeof v !== 'number') throw new TypeError(`${name} must be a number, got ${typeof v}`);
  if (!Number.isSafeInteger(v) || v < min) throw new RangeError(`${name} must be an integer ≥ ${min}, got ${String(v)}`);
  return v;
}

/** A finite number ≥ `min` (> `min` with `above`). @throws {TypeError} not a number @throws {RangeError} out of range */
export function numberOption(name: string, value: number | undefined, fallback: number, min = 0, above = false): number {
  const v = value ?? fallback;
  if (typeof v !== 'number') throw new TypeError(`${name} must be a number, got ${typeof v}`);
  if (!Number.isFinite(v) || v < min || (above && v === min)) throw new RangeError(`${name} must be a number ${above ? '>' : '≥'} ${min}, got ${String(v)}`);
  return v;
}

/** A non-empty string. @throws {TypeError} */
export function nameOption(name: string, value: string | undefined, fallback: string): string {
  const v = value ?? fallback;
  if (typeof v !== 'string' || v === '') throw new TypeError(`${name} must be a non-empty string, got ${v === '' ? "''" : typeof v}`);
  return v;
}

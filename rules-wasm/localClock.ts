/**
 * Local minute-of-week for time-window conditions, without an Intl call per event: a zone's
 * offset is looked up once per quarter hour (every real zone changes offset on a quarter hour).
 */
const QUARTER_HOUR_MS = 15 * 60_000;
const MINUTES_PER_DAY = 1440;
const CACHE_LIMIT = 50_000;

export const UNKNOWN_MINUTE = 0xffffffff;

export class LocalClock {
  readonly #format: Intl.DateTimeFormat;
  readonly #offsets = new Map<number, number>();

  constructor(readonly timeZone: string) {
    this.#format = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
    });
  }

  /** 0 = Monday 00:00 … 10079 = Sunday 23:59, local; UNKNOWN_MINUTE for a missing or bad ts. */
  minuteOfWeek(ts: number | undefined): number {
    if (ts === undefined || !Number.isFinite(ts)) return UNKNOWN_MINUTE;
    const local = ts + this.offsetMs(ts);
    const days = Math.floor(local / 86_400_000);
    const minute = Math.floor((local - days * 86_400_000) / 60_000);
    // 1970-01-01 was a Thursday: day 3 when Monday is 0.
    const weekday = (((days + 3) % 7) + 7) % 7;
    return weekday * MINUTES_PER_DAY + minute;
  }

  offsetMs(ts: number): number {
    const bucket = Math.floor(ts / QUARTER_HOUR_MS);
    let offset = this.#offsets.get(bucket);
    if (offset === undefined) {
      if (this.#offsets.size >= CACHE_LIMIT) this.#offsets.clear();
      offset = this.#computeOffset(bucket * QUARTER_HOUR_MS);
      this.#offsets.set(bucket, offset);
    }
    return offset;
  }

  #computeOffset(ts: number): number {
    const parts: Record<string, number> = {};
    for (const p of this.#format.formatToParts(ts)) if (p.type !== 'literal') parts[p.type] = Number(p.value);
    const asUtc = Date.UTC(parts['year'] ?? 1970, (parts['month'] ?? 1) - 1, parts['day'] ?? 1, parts['hour'] ?? 0, parts['minute'] ?? 0);
    return asUtc - Math.floor(ts / 60_000) * 60_000;
  }
}

/**
 * Retries bounded by elapsed time, not by a count: a JetStream leader election takes ~5.5 s and
 * a broker restart a few seconds more, so "5 attempts" gives up in the middle of a blip while a
 * time budget rides it out and still ends. Backoff doubles with full jitter (half to all of the
 * step), so clients that failed together do not come back together.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { CodedError } from './codedError.js';

/** @default 30 s: covers an election (~5.5 s) and a supervised broker restart with margin. */
export const DEFAULT_RETRY_BUDGET_MS = 30_000;
export const DEFAULT_RETRY_INITIAL_DELAY_MS = 100;
export const DEFAULT_RETRY_MAX_DELAY_MS = 2_000;

export interface RetryOptions {
  /** Time from the first attempt after which no new attempt starts. @default DEFAULT_RETRY_BUDGET_MS */
  budgetMs?: number;
  /** @default 100 */
  initialDelayMs?: number;
  /** @default 2000 */
  maxDelayMs?: number;
  /** Stops waiting and retrying (the last error is thrown). */
  signal?: AbortSignal | undefined;
  /** Which errors are worth another attempt. @default every error */
  retryable?: (err: unknown) => boolean;
  onRetry?: (info: RetryInfo) => void;
}

export interface RetryInfo {
  attempt: number;
  delayMs: number;
  elapsedMs: number;
  error: unknown;
}

export class RetryBudgetExhaustedError extends CodedError<'retry_budget_exhausted'> {
  readonly attempts: number;
  readonly elapsedMs: number;
  constructor(what: string, attempts: number, elapsedMs: number, cause: unknown) {
    super(
      'retry_budget_exhausted',
      `${what}: gave up after ${attempts} attempts in ${(elapsedMs / 1000).toFixed(1)} s: ${cause instanceof Error ? cause.message : String(cause)}`,
      { cause },
    );
    this.attempts = attempts;
    this.elapsedMs = elapsedMs;
  }
}

/** The wait after failed attempt `attempt` (1, 2, …) without jitter: doubling from `initial`, capped at `max`. */
export function backoffStep(attempt: number, initialDelayMs: number, maxDelayMs: number): number {
  return Math.min(maxDelayMs, initialDelayMs * 2 ** Math.min(30, Math.max(0, attempt - 1)));
}

/** {@link backoffStep} with jitter: half to all of the step, so clients that failed together spread out. */
export function backoffDelay(attempt: number, initialDelayMs: number, maxDelayMs: number, random: () => number = Math.random): number {
  const step = backoffStep(attempt, initialDelayMs, maxDelayMs);
  return Math.round(step / 2 + (random() * step) / 2);
}

/**
 * Runs `fn` until it resolves, an error is not retryable, or the budget is spent. A spent
 * budget throws {@link RetryBudgetExhaustedError} (the last error as its cause), labelled `what`.
 */
export async function retryFor<T>(what: string, fn: (attempt: number) => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const budgetMs = options.budgetMs ?? DEFAULT_RETRY_BUDGET_MS;
  const initial = options.initialDelayMs ?? DEFAULT_RETRY_INITIAL_DELAY_MS;
  const max = options.maxDelayMs ?? DEFAULT_RETRY_MAX_DELAY_MS;
  const retryable = options.retryable ?? (() => true);
  const started = performance.now();
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      const elapsedMs = performance.now() - started;
      if (!retryable(err) || options.signal?.aborted) throw err;
      const delayMs = backoffDelay(attempt, initial, max);
      if (elapsedMs + delayMs > budgetMs) throw new RetryBudgetExhaustedError(what, attempt, elapsedMs, err);
      options.onRetry?.({ attempt, delayMs, elapsedMs, error: err });
      try {
        await sleep(delayMs, undefined, options.signal ? { signal: options.signal } : undefined);
      } catch {
        throw err; // aborted while waiting
      }
    }
  }
}

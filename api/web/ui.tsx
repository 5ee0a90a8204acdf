/** Small pieces every view uses: loading, empty and error states, times, and data loading. */
import type { ComponentChildren } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { ApiFailure } from './client.js';

export function Loading({ what }: { what: string }) {
  return (
    <p class="state loading" role="status">
      Loading {what}…
    </p>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <p class="state empty">{children}</p>;
}

/** A grid's header row: a column is its label, or [label, class]. */
export function GridHead({ columns }: { columns: ReadonlyArray<string | readonly [label: string, className: string]> }) {
  return (
    <thead>
      <tr>{columns.map((c) => (typeof c === 'string' ? <th>{c}</th> : <th class={c[1]}>{c[0]}</th>))}</tr>
    </thead>
  );
}

export function ErrorNote({ error, retry }: { error: unknown; retry?: () => void }) {
  if (error === null || error === undefined) return null;
  return (
    <p class="state error" role="alert">
      {describe(error)}
      {retry && (
        <button type="button" class="link" onClick={retry}>
          Try again
        </button>
      )}
    </p>
  );
}

export function describe(error: unknown): string {
  if (error instanceof ApiFailure) return error.message;
  return error instanceof Error ? `Something went wrong: ${error.message}` : 'Something went wrong.';
}

// One formatter each: toLocaleTimeString builds a new one per call, which the feed cannot afford.
const TIME = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
const DAY = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });

export function time(iso: string | null | undefined): string {
  return iso ? TIME.format(Date.parse(iso)) : '—';
}

export function dateTime(iso: string | null | undefined): string {
  return iso ? `${DAY.format(Date.parse(iso))} ${time(iso)}` : '—';
}

export function ago(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return 'never';
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export const n = (x: number): string => x.toLocaleString('en-US');

export interface Loaded<T> {
  data: T | null;
  error: unknown;
  loading: boolean;
  reload: () => void;
}

/** Loads on mount and when `key` changes; every `everyMs` again (0: never) while mounted. */
export function useLoad<T>(load: () => Promise<T>, key: string, everyMs = 0): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const generation = useRef(0);
  const latest = useRef(load);
  latest.current = load;
  const run = useCallback(() => {
    const g = ++generation.current;
    setLoading(true);
    latest.current().then(
      (d) => {
        if (g !== generation.current) return;
        setData(d);
        setError(null);
        setLoading(false);
      },
      (e: unknown) => {
        if (g !== generation.current) return;
        setError(e);
        setLoading(false);
      },
    );
  }, []);
  useEffect(() => {
    setData(null);
    run();
    if (everyMs <= 0) return undefined;
    const t = window.setInterval(run, everyMs);
    return () => window.clearInterval(t);
  }, [key, everyMs, run]);
  return { data, error, loading, reload: run };
}

export function SeverityBadge({ severity }: { severity: string }) {
  return <span class={`sev sev-${severity}`}>{severity}</span>;
}

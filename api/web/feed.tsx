/**
 * The live violations feed: the latest alerts from `/dashboard/alerts`, then every alert of the
 * socket (in batches), newest on top. Arrivals are added at most every FLUSH_EVERY_MS in one
 * render, and only the rows in view are in the page (a virtual list of fixed-height rows), so
 * the feed keeps up with thousands a second; the newest FEED_KEPT are kept and scrollable.
 */
import { Component } from 'preact';
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { qs } from './client.js';
import type { AlertMessage, RemediationMessage } from './live.js';
import type { PageContext } from './context.js';
import { Empty, ErrorNote, GridHead, Loading, SeverityBadge, time } from './ui.js';

const FEED_KEPT = 2000;
/** Height of a feed row in px (styles.css `.feed-table tr`): the virtual list counts on it. */
const ROW_H = 34;
/** Rows drawn beyond the visible ones, above and below. */
const OVERSCAN = 8;
/** Arrivals are drawn at most this often: smooth enough to read, cheap at thousands a second. */
const FLUSH_EVERY_MS = 250;
const SEVERITIES = ['low', 'medium', 'high', 'critical'] as const;

export interface FeedStats {
  received: number;
  renders: number;
}

declare global {
  interface Window {
    /** Read by the browser tests. */
    __towerwatch?: { feed: FeedStats };
  }
}

interface Filters {
  severity: string;
  app: string;
  tower: string;
  user: string;
}

const NO_FILTERS: Filters = { severity: '', app: '', tower: '', user: '' };

export function Feed({ ctx }: { ctx: PageContext }) {
  const [alerts, setAlerts] = useState<AlertMessage[]>([]);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<unknown>(null);
  const [paused, setPaused] = useState(false);
  const [held, setHeld] = useState(0);
  const [filters, setFilters] = useState<Filters>(NO_FILTERS);
  const [selected, setSelected] = useState<AlertMessage | null>(null);
  const buffer = useRef<AlertMessage[]>([]);
  const matchesRef = useRef<(a: AlertMessage) => boolean>(() => true);
  // Filter choices grow as apps and towers are seen, without a pass over the feed per render.
  const apps = useRef(new Map<string, string>());
  const towers = useRef(new Map<string, string>());
  const [, setChoices] = useState(0);
  const pausedRef = useRef(false);
  pausedRef.current = paused;
  const list = useRef<HTMLDivElement>(null);
  const [win, setWin] = useState({ top: 0, height: 600 });
  /** Rows added above while the reader is scrolled down: the view is moved by as much, so it stays put. */
  const shift = useRef(0);
  const stats = useRef<FeedStats>({ received: 0, renders: 0 });

  /** Held arrivals onto the feed, newest first (refs and state setters only: safe from any closure). */
  const drain = (): void => {
    const fresh = buffer.current.reverse();
    buffer.current = [];
    setHeld(0);
    stats.current.renders++;
    if ((list.current?.scrollTop ?? 0) > 0) shift.current += fresh.filter(matchesRef.current).length;
    setAlerts((prev) => fresh.concat(prev).slice(0, FEED_KEPT));
  };
  /** Whether this alert names an app or tower the filters do not offer yet (and now do). */
  const remember = (a: { app_id: string; app_name: string; tower_id: string; tower_location: string }): boolean => {
    if (apps.current.has(a.app_id) && towers.current.has(a.tower_id)) return false;
    apps.current.set(a.app_id, a.app_name);
    towers.current.set(a.tower_id, a.tower_location);
    return true;
  };

  useEffect(() => {
    window.__towerwatch = { feed: stats.current };
    let frame = 0;
    let lastFlush = 0;
    const flush = (now: number): void => {
      if (now - lastFlush < FLUSH_EVERY_MS) {
        frame = window.setTimeout(() => (frame = requestAnimationFrame(flush)), FLUSH_EVERY_MS - (now - lastFlush));
        return;
      }
      lastFlush = now;
      frame = 0;
      if (pausedRef.current) setHeld(buffer.current.length);
      else drain();
    };
    const off = ctx.live.on('alerts', (m) => {
      let fresh = false;
      for (const x of m.alerts) {
        stats.current.received++;
        buffer.current.push({ type: 'alert', ...x });
        if (remember(x)) fresh = true;
      }
      if (fresh) setChoices((c) => c + 1);
      if (buffer.current.length > FEED_KEPT) buffer.current.splice(0, buffer.current.length - FEED_KEPT);
      if (frame === 0) frame = requestAnimationFrame(flush);
    });
    ctx.api.get<{ alerts: Array<Omit<AlertMessage, 'type'>> }>(`/dashboard/alerts${qs({ ...ctx.scope, limit: 100 })}`).then(
      (r) => {
        for (const a of r.alerts) remember(a);
        setChoices((c) => c + 1);
        setAlerts((prev) => {
          const seen = new Set(prev.map((a) => a.alert_id));
          return prev.concat(r.alerts.filter((a) => !seen.has(a.alert_id)).map((a) => ({ type: 'alert' as const, ...a })));
        });
        setLoading(false);
      },
      (e: unknown) => {
        setError(e);
        setLoading(false);
      },
    );
    return () => {
      off();
      // Either a timer or a frame request; ids never collide with a live one of the other kind here.
      if (frame !== 0) {
        cancelAnimationFrame(frame);
        clearTimeout(frame);
      }
    };
  }, [ctx]);

  const resume = (): void => {
    setPaused(false);
    requestAnimationFrame(drain);
  };

  const sorted = (m: Map<string, string>) => [...m].sort((x, y) => x[1].localeCompare(y[1]));
  const options = { apps: sorted(apps.current), towers: sorted(towers.current) };

  matchesRef.current = matcher(filters);
  const shown = alerts.filter(matchesRef.current);
  const first = Math.max(0, Math.floor(win.top / ROW_H) - OVERSCAN);
  const last = Math.min(shown.length, Math.ceil((win.top + win.height) / ROW_H) + OVERSCAN);
  const drawn = shown.slice(first, last);

  useLayoutEffect(() => {
    const el = list.current;
    if (el !== null && shift.current > 0) {
      el.scrollTop += shift.current * ROW_H;
      shift.current = 0;
    }
  });
  useEffect(() => {
    const el = list.current;
    if (el === null) return undefined;
    let frame = 0;
    const measure = (): void => {
      frame = 0;
      setWin({ top: el.scrollTop, height: el.clientHeight || 600 });
    };
    const onScroll = (): void => {
      if (frame === 0) frame = requestAnimationFrame(measure);
    };
    el.addEventListener('scroll', onScroll, { passive: true });
    const resize = new ResizeObserver(onScroll);
    resize.observe(el);
    measure();
    return () => {
      el.removeEventListener('scroll', onScroll);
      resize.disconnect();
      if (frame !== 0) cancelAnimationFrame(frame);
    };
  }, [loading, shown.length === 0]);
  const set = (k: keyof Filters) => (e: Event) => setFilters({ ...filters, [k]: (e.currentTarget as HTMLInputElement | HTMLSelectElement).value });
  const filtered = Object.values(filters).some((v) => v !== '');

  return (
    <section class="feed-view">
      <div class="toolbar" role="toolbar" aria-label="Feed filters">
        <FilterSelect label="Severity" testid="filter-severity" value={filters.severity} onChange={set('severity')} options={SEVERITIES.map((s) => [s, s])} />
        <FilterSelect label="App" testid="filter-app" value={filters.app} onChange={set('app')} options={options.apps} />
        <FilterSelect
          label="Tower"
          testid="filter-tower"
          value={filters.tower}
          onChange={set('tower')}
          options={options.towers.map(([id, location]) => [id, location || id])}
        />
        <label>
          User
          <input data-testid="filter-user" type="search" placeholder="name or id" value={filters.user} onInput={set('user')} />
        </label>
        {filtered && (
          <button type="button" class="link" onClick={() => setFilters(NO_FILTERS)}>
            Clear filters
          </button>
        )}
        <span class="spacer" />
        {paused ? (
          <button type="button" data-testid="resume" class="primary" onClick={resume}>
            Resume{held > 0 ? ` (${held} new)` : ''}
          </button>
        ) : (
          <button type="button" data-testid="pause" onClick={() => setPaused(true)}>
            Pause
          </button>
        )}
      </div>
      <ErrorNote error={error} />
      <div class="feed-body">
        <div class="feed-list" data-testid="feed" aria-live="off" ref={list}>
          {loading && alerts.length === 0 ? (
            <Loading what="recent violations" />
          ) : shown.length === 0 ? (
            <Empty>{filtered ? 'No violation matches these filters.' : 'No violations yet. New ones appear here as they happen.'}</Empty>
          ) : (
            <table class="grid feed-table">
              <GridHead columns={['Time', 'Severity', 'User', 'App · action', 'Tower', ['Policy', 'wide']]} />
              <tbody>
                {first > 0 && <tr class="gap" style={{ height: `${first * ROW_H}px` }} aria-hidden="true" />}
                {drawn.map((a) => (
                  <AlertRow key={a.alert_id} alert={a} selected={selected?.alert_id === a.alert_id} onSelect={setSelected} />
                ))}
                {last < shown.length && <tr class="gap" style={{ height: `${(shown.length - last) * ROW_H}px` }} aria-hidden="true" />}
              </tbody>
            </table>
          )}
        </div>
        {selected && <AlertDetail ctx={ctx} alert={selected} onClose={() => setSelected(null)} />}
      </div>
      <p class="footnote">
        {shown.length === alerts.length ? `${alerts.length} violations` : `${shown.length} of ${alerts.length} violations match`} (the newest {FEED_KEPT} are
        kept){paused ? ' · paused' : ''}
      </p>
    </section>
  );
}

/** A row redrawn only when it is selected or unselected: new arrivals cost their own rows only. */
class AlertRow extends Component<{ alert: AlertMessage; selected: boolean; onSelect: (a: AlertMessage) => void }> {
  override shouldComponentUpdate(next: { alert: AlertMessage; selected: boolean }): boolean {
    return next.alert !== this.props.alert || next.selected !== this.props.selected;
  }
  override render() {
    const { alert: a, selected, onSelect } = this.props;
    return (
      <tr
        data-testid="alert-row"
        data-alert-id={a.alert_id}
        data-severity={a.severity}
        data-remediation={a.remediation ?? ''}
        class={selected ? 'selected' : ''}
        onClick={() => onSelect(a)}
      >
        <td class="num">{time(a.timestamp)}</td>
        <td>
          <SeverityBadge severity={a.severity} />
        </td>
        <td>{a.user_name}</td>
        <td>
          {a.app_name} · {a.action}
        </td>
        <td>{a.tower_location || a.tower_id}</td>
        <td class="wide">{a.policy_name}</td>
      </tr>
    );
  }
}

/** A toolbar filter: "all", or one of `options` given as [value, label]. */
function FilterSelect(props: {
  label: string;
  testid: string;
  value: string;
  onChange: (e: Event) => void;
  options: ReadonlyArray<readonly [string, string]>;
}) {
  return (
    <label>
      {props.label}
      <select data-testid={props.testid} value={props.value} onChange={props.onChange}>
        <option value="">all</option>
        {props.options.map(([value, label]) => (
          <option value={value}>{label}</option>
        ))}
      </select>
    </label>
  );
}

function matcher(f: Filters): (a: AlertMessage) => boolean {
  const user = f.user.trim().toLowerCase();
  return (a) =>
    (f.severity === '' || a.severity === f.severity) &&
    (f.app === '' || a.app_id === f.app) &&
    (f.tower === '' || a.tower_id === f.tower) &&
    (user === '' || a.user_name.toLowerCase().includes(user) || a.user_id.toLowerCase() === user);
}

function AlertDetail({ ctx, alert, onClose }: { ctx: PageContext; alert: AlertMessage; onClose: () => void }) {
  const [outcomes, setOutcomes] = useState<RemediationMessage[]>([]);
  const [asked, setAsked] = useState<Record<string, string>>({});
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    setOutcomes([]);
    setAsked({});
    setError(null);
    return ctx.live.on('remediation', (m) => {
      if (m.alert_id === alert.alert_id) setOutcomes((o) => [m, ...o]);
    });
  }, [alert.alert_id, ctx]);
  const act = (action: 'block_device' | 'block_app'): void => {
    setError(null);
    setAsked((x) => ({ ...x, [action]: 'sending' }));
    ctx.api.post<{ status: string }>('/remedial-actions', { ...ctx.scope, alert_id: alert.alert_id, action }).then(
      (r) => setAsked((x) => ({ ...x, [action]: r.status === 'already_queued' ? 'already asked' : 'queued' })),
      (e: unknown) => {
        setAsked((x) => ({ ...x, [action]: '' }));
        setError(e);
      },
    );
  };
  const rows: Array<[string, string]> = [
    ['User', `${alert.user_name} (${alert.user_id})`],
    ['Device', alert.device_id],
    ['App', alert.app_name],
    ['Action', alert.action],
    ['Tower', `${alert.tower_location || '?'} (${alert.tower_id}, ${alert.region || 'no region'})`],
    ['Carrier', alert.carrier],
    ['Policy', alert.policy_name],
    ['Rule', alert.rule_id ?? 'default of the policy'],
    ['Remediation', alert.remediation ?? 'none'],
    ['Time', new Date(alert.timestamp).toLocaleString()],
    ['Alert id', alert.alert_id],
  ];
  return (
    <aside class="detail" data-testid="alert-detail" aria-label="Violation details">
      <header>
        <h2>
          <SeverityBadge severity={alert.severity} /> {alert.app_name} · {alert.action}
        </h2>
        <button type="button" class="link" onClick={onClose} aria-label="Close details">
          Close
        </button>
      </header>
      <dl>
        {rows.map(([k, v]) => (
          <>
            <dt>{k}</dt>
            <dd>{v}</dd>
          </>
        ))}
      </dl>
      {ctx.me.can.write ? (
        <div class="actions">
          <button type="button" data-testid="block-device" class="danger" disabled={asked['block_device'] === 'sending'} onClick={() => act('block_device')}>
            Block device
          </button>
          <button type="button" data-testid="block-app" class="danger" disabled={asked['block_app'] === 'sending'} onClick={() => act('block_app')}>
            Block app
          </button>
        </div>
      ) : (
        <p class="hint">Blocking needs an enterprise admin.</p>
      )}
      {Object.entries(asked)
        .filter(([, s]) => s !== '' && s !== 'sending')
        .map(([a, s]) => (
          <p class="hint">
            {a === 'block_device' ? 'Block device' : 'Block app'}: {s}; the outcome appears below.
          </p>
        ))}
      <ErrorNote error={error} />
      <Explain ctx={ctx} alertId={alert.alert_id} />
      <ul class="outcomes" data-testid="remediation-outcomes">
        {outcomes.map((o) => (
          <li class={`outcome ${o.status}`}>
            {o.action_name} — {o.status}
            {o.reason ? ` (${o.reason})` : ''} · {o.trigger} · {time(o.executed_at)}
          </li>
        ))}
      </ul>
    </aside>
  );
}

interface Check {
  test: string;
  expected: unknown;
  seen: unknown;
  held: boolean;
}
interface Candidate {
  kind: 'rule' | 'policy_default';
  rule_id: string | null;
  policy_id: string;
  permission: string;
  severity: string | null;
  checks: Check[];
  lost_because?: string;
  failed?: Check;
}
interface Explanation {
  matches_stored: boolean;
  explanation: { deciding: Candidate | null; beaten: Candidate[]; not_matching: Candidate[] };
  policy_version: { version: string; author: string; created_at: string };
}

const shown = (u: unknown): string =>
  u === null || u === undefined ? 'nothing' : Array.isArray(u) ? u.join(', ') : typeof u === 'object' ? JSON.stringify(u) : String(u);
const who = (c: Candidate): string => (c.kind === 'rule' ? `rule ${c.rule_id ?? ''}` : `the default of ${c.policy_id}`);

/** Why the verdict: the stored event replayed through the version that decided it (GET …/explain). */
function Explain({ ctx, alertId }: { ctx: PageContext; alertId: string }) {
  const [x, setX] = useState<Explanation | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(false);
  useEffect(() => {
    setX(null);
    setError(null);
  }, [alertId]);
  const load = (): void => {
    setLoading(true);
    setError(null);
    ctx.api.get<Explanation>(`/dashboard/alerts/${encodeURIComponent(alertId)}/explain${qs({ ...ctx.scope })}`).then(
      (r) => {
        setX(r);
        setLoading(false);
      },
      (e: unknown) => {
        setError(e);
        setLoading(false);
      },
    );
  };
  if (x === null) {
    return (
      <div class="explain">
        <button type="button" data-testid="explain" disabled={loading} onClick={load}>
          {loading ? 'Explaining…' : 'Why?'}
        </button>
        <ErrorNote error={error} />
      </div>
    );
  }
  const d = x.explanation.deciding;
  return (
    <section class="explain" data-testid="explanation" aria-label="Why this verdict">
      <h3>Why</h3>
      <p>
        {d === null
          ? 'No policy of the user’s roles covers it.'
          : `Decided by ${d.kind === 'rule' ? `rule ${d.rule_id ?? ''} of policy` : 'the default of policy'} ${d.policy_id}: ${d.permission}${d.severity ? `, ${d.severity}` : ''}.`}{' '}
        <span class="hint">
          Policy version {x.policy_version.version.slice(0, 8)} by {x.policy_version.author}, {new Date(x.policy_version.created_at).toLocaleString()}
          {x.matches_stored ? '' : ' — the replay does not give the stored verdict'}
        </span>
      </p>
      {d === null ? null : (
        <ul class="checks">
          {d.checks.map((c) => (
            <li class={c.held ? 'held' : 'failed'}>
              {c.held ? '✓' : '✗'} {c.test}: needs {shown(c.expected)}, had {shown(c.seen)}
            </li>
          ))}
        </ul>
      )}
      {x.explanation.beaten.length > 0 ? (
        <>
          <h4>Also matched, and lost</h4>
          <ul class="beaten">
            {x.explanation.beaten.map((b) => (
              <li>
                {who(b)} ({b.permission}): {b.lost_because}
              </li>
            ))}
          </ul>
        </>
      ) : null}
    </section>
  );
}

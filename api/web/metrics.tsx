/**
 * `/dashboard/metrics` as charts and tables: events and violations per minute (uPlot, redrawn
 * in place as the data refreshes), top apps, users and towers (with locations), for a picked range.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import { qs } from './client.js';
import type { PageContext } from './context.js';
import { Empty, ErrorNote, Loading, n, useLoad } from './ui.js';

const RANGES = [
  { id: '15m', label: 'Last 15 min', refreshMs: 5000 },
  { id: '1h', label: 'Last hour', refreshMs: 5000 },
  { id: '24h', label: 'Last 24 h', refreshMs: 30_000 },
  { id: '7d', label: 'Last 7 days', refreshMs: 60_000 },
] as const;
type RangeId = (typeof RANGES)[number]['id'];

interface Metrics {
  from: string;
  to: string;
  bucket: 'minute' | 'hour';
  totals: { events: number; violations: number; by_verdict: { allow: number; deny: number; unregistered: number } };
  series: Array<{ t: string; events: number; violations: number }>;
  top_apps: Array<{ app_id: string; app_name: string; events: number; violations: number }>;
  top_users: Array<{ user_id: string; user_name: string; violations: number }>;
  top_towers: Array<{ tower_id: string; location: string; lat: number | null; lon: number | null; events: number; violations: number }>;
}

export function MetricsView({ ctx }: { ctx: PageContext }) {
  const [range, setRange] = useState<RangeId>('1h');
  const spec = RANGES.find((r) => r.id === range) ?? RANGES[1];
  const m = useLoad(() => ctx.api.get<Metrics>(`/dashboard/metrics${qs({ ...ctx.scope, range, top: 10 })}`), `${ctx.enterpriseId}|${range}`, spec.refreshMs);
  return (
    <section class="metrics-view">
      <div class="toolbar">
        <div class="segmented" role="radiogroup" aria-label="Time range">
          {RANGES.map((r) => (
            <button
              type="button"
              role="radio"
              aria-checked={r.id === range}
              class={r.id === range ? 'on' : ''}
              data-testid={`range-${r.id}`}
              onClick={() => setRange(r.id)}
            >
              {r.label}
            </button>
          ))}
        </div>
        <span class="spacer" />
        <span class="hint">{m.loading ? 'Updating…' : `Updates every ${spec.refreshMs / 1000} s`}</span>
      </div>
      <ErrorNote error={m.error} retry={m.reload} />
      {m.data === null ? (
        m.error === null && <Loading what="metrics" />
      ) : (
        <>
          <div class="cards">
            <Card label="Events" value={n(m.data.totals.events)} />
            <Card label="Violations" value={n(m.data.totals.violations)} tone="bad" />
            <Card label="Denied" value={n(m.data.totals.by_verdict.deny)} />
            <Card label="Unregistered devices' events" value={n(m.data.totals.by_verdict.unregistered)} />
          </div>
          <div class="panel">
            <h2>Events and violations per {m.data.bucket}</h2>
            {m.data.series.length === 0 ? <Empty>No traffic in this range.</Empty> : <SeriesChart metrics={m.data} />}
          </div>
          <div class="columns">
            <Top
              title="Top apps by violations"
              rows={m.data.top_apps.map((a) => [a.app_name, a.violations, a.events])}
              heads={['App', 'Violations', 'Events']}
            />
            <Top title="Top users by violations" rows={m.data.top_users.map((u) => [u.user_name, u.violations])} heads={['User', 'Violations']} />
            <Top
              title="Towers by violations"
              testid="tower-table"
              rows={m.data.top_towers.map((t) => [
                `${t.location || t.tower_id}`,
                t.violations,
                t.events,
                t.lat === null || t.lon === null ? '—' : `${t.lat.toFixed(2)}, ${t.lon.toFixed(2)}`,
              ])}
              heads={['Tower', 'Violations', 'Events', 'Lat, lon']}
            />
          </div>
        </>
      )}
    </section>
  );
}

function Card({ label, value, tone }: { label: string; value: string; tone?: 'bad' }) {
  return (
    <div class={`card ${tone ?? ''}`}>
      <div class="card-value">{value}</div>
      <div class="card-label">{label}</div>
    </div>
  );
}

function Top({ title, heads, rows, testid }: { title: string; heads: string[]; rows: Array<Array<string | number>>; testid?: string }) {
  return (
    <div class="panel" data-testid={testid}>
      <h2>{title}</h2>
      {rows.length === 0 ? (
        <Empty>Nothing in this range.</Empty>
      ) : (
        <table class="grid compact">
          <thead>
            <tr>
              {heads.map((h, i) => (
                <th class={i > 0 ? 'num' : ''}>{h}</th>
              ))}
            </tr>
          </thead>
          <tbody>
            {rows.map((r) => (
              <tr>
                {r.map((c, i) => (
                  <td class={i > 0 ? 'num' : ''}>{typeof c === 'number' ? n(c) : c}</td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

/** The series over the whole range, one point per bucket: buckets without traffic are zeros, not gaps. */
function aligned(m: Metrics): uPlot.AlignedData {
  const step = m.bucket === 'minute' ? 60 : 3600;
  const byT = new Map(m.series.map((p) => [Math.floor(Date.parse(p.t) / 1000), p]));
  const xs: number[] = [];
  const events: number[] = [];
  const violations: number[] = [];
  const start = Math.floor(Date.parse(m.from) / 1000 / step) * step;
  for (let t = start; t < Date.parse(m.to) / 1000; t += step) {
    const p = byT.get(t);
    xs.push(t);
    events.push(p?.events ?? 0);
    violations.push(p?.violations ?? 0);
  }
  return [xs, events, violations];
}

function SeriesChart({ metrics }: { metrics: Metrics }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const data = aligned(metrics);
  useEffect(() => {
    const el = box.current;
    if (el === null) return undefined;
    const width = (): number => Math.max(280, el.clientWidth);
    plot.current = new uPlot(
      {
        width: width(),
        height: 220,
        legend: { live: false },
        scales: { x: { time: true }, v: { auto: true } },
        axes: [{}, { label: 'events' }, { scale: 'v', side: 1, label: 'violations', grid: { show: false } }],
        series: [
          {},
          { label: 'Events', stroke: '#3b82f6', width: 2, fill: 'rgba(59,130,246,0.08)' },
          { label: 'Violations', scale: 'v', stroke: '#dc2626', width: 2 },
        ],
      },
      data,
      el,
    );
    const resize = new ResizeObserver(() => plot.current?.setSize({ width: width(), height: 220 }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, []);
  // New data: the same chart redrawn, not rebuilt.
  useEffect(() => {
    plot.current?.setData(data);
  }, [metrics]);
  return <div class="chart" ref={box} data-testid="series-chart" />;
}

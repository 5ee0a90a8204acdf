/**
 * What the towers are blocking (the active blocks, with the alerts each answered; admins lift
 * one), the notification outputs (admins), then the remediation log: every action taken,
 * automatic or by hand, newest first; live outcomes on top.
 */
import { useEffect, useState } from 'preact/hooks';
import { qs } from './client.js';
import type { PageContext } from './context.js';
import type { RemediationMessage } from './live.js';
import { Outputs } from './outputs.js';
import { ago, dateTime, Empty, ErrorNote, GridHead, Loading, useLoad } from './ui.js';

type Action = Omit<RemediationMessage, 'type'> & { requested_by?: string | null };

export function RemediationView({ ctx }: { ctx: PageContext }) {
  const [status, setStatus] = useState('');
  const [live, setLive] = useState<Action[]>([]);
  const log = useLoad(
    () => ctx.api.get<{ remedial_actions: Action[]; total: number }>(`/remedial-actions${qs({ ...ctx.scope, status, limit: 100 })}`),
    `${ctx.enterpriseId}|${status}`,
    30_000,
  );
  useEffect(() => ctx.live.on('remediation', (m) => setLive((l) => [m, ...l].slice(0, 200))), [ctx]);
  const listed = log.data?.remedial_actions ?? [];
  const ids = new Set(listed.map((a) => a.action_id));
  const all = [...live.filter((a) => !ids.has(a.action_id) && (status === '' || a.status === status)), ...listed];
  return (
    <section class="remediation-view">
      <Blocks ctx={ctx} />
      {ctx.me.can.write && <Outputs ctx={ctx} />}
      <div class="toolbar">
        <label>
          Status
          <select value={status} onChange={(e) => setStatus(e.currentTarget.value)}>
            <option value="">all</option>
            {['success', 'failed', 'timeout', 'skipped_by_plan', 'merged'].map((s) => (
              <option value={s}>{s.replace(/_/g, ' ')}</option>
            ))}
          </select>
        </label>
      </div>
      <ErrorNote error={log.error} retry={log.reload} />
      {log.data === null && log.error === null ? (
        <Loading what="remedial actions" />
      ) : all.length === 0 ? (
        <Empty>No remedial action in the last 7 days.</Empty>
      ) : (
        <table class="grid" data-testid="remediation-log">
          <GridHead columns={['Time', 'Action', 'Status', 'Trigger', 'Device', 'Tower', ['Attempts', 'num'], ['Reason', 'wide']]} />
          <tbody>
            {all.map((a) => (
              <tr key={a.action_id} data-testid="remediation-row" data-alert-id={a.alert_id}>
                <td class="num">{dateTime(a.executed_at)}</td>
                <td>{a.action_name}</td>
                <td>
                  <span class={`outcome ${a.status}`}>{a.status.replace(/_/g, ' ')}</span>
                </td>
                <td>{a.trigger === 'manual' ? `by ${a.requested_by ?? 'hand'}` : 'automatic'}</td>
                <td class="mono">{a.device_id}</td>
                <td>{a.tower_id}</td>
                <td class="num">{a.attempts}</td>
                <td class="wide">{a.reason ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

interface Block {
  block_id: string;
  device_id: string;
  app_id: string | null;
  scope: 'tower' | 'carrier' | 'enterprise';
  tower_id: string;
  carrier: string;
  towers: string[];
  created_by: string;
  created_at: string;
  hits: number;
  last_alert_id: string;
  last_hit_at: string;
  expires_at: string | null;
  status: 'active' | 'ineffective';
  events_since: number;
  last_seen_at: string | null;
}

/** The active blocks; refreshed with each remediation outcome, and every 15 s. */
function Blocks({ ctx }: { ctx: PageContext }) {
  const blocks = useLoad(() => ctx.api.get<{ blocks: Block[]; total: number }>(`/blocks${qs({ ...ctx.scope, limit: 100 })}`), ctx.enterpriseId, 15_000);
  const [lifting, setLifting] = useState<Record<string, boolean>>({});
  const [error, setError] = useState<unknown>(null);
  useEffect(() => ctx.live.on('remediation', () => blocks.reload()), [ctx]);
  useEffect(() => ctx.live.on('block.ineffective', () => blocks.reload()), [ctx]);
  const lift = (b: Block): void => {
    setError(null);
    setLifting((l) => ({ ...l, [b.block_id]: true }));
    ctx.api.call('DELETE', `/blocks/${b.block_id}${qs({ ...ctx.scope })}`).then(
      () => setTimeout(blocks.reload, 1000),
      (e: unknown) => {
        setError(e);
        setLifting((l) => ({ ...l, [b.block_id]: false }));
      },
    );
  };
  const list = blocks.data?.blocks ?? [];
  return (
    <div class="panel" data-testid="blocks">
      <h2>Active blocks {blocks.data !== null && <span class="status">{blocks.data.total}</span>}</h2>
      <ErrorNote error={blocks.error ?? error} retry={blocks.reload} />
      {blocks.data === null && blocks.error === null ? (
        <Loading what="blocks" />
      ) : list.length === 0 ? (
        <Empty>No device or app is blocked.</Empty>
      ) : (
        <table class="grid compact">
          <GridHead columns={['Device', 'App', 'Where', 'Status', 'By', 'Since', 'Until', ['Alerts', 'num'], 'Last alert', '']} />
          <tbody>
            {list.map((b) => (
              <tr key={b.block_id} data-testid="block" data-device-id={b.device_id} data-tower-id={b.tower_id}>
                <td class="mono">{b.device_id}</td>
                <td>{b.app_id ?? 'whole device'}</td>
                <td title={b.towers.join(', ')}>
                  {b.scope === 'tower'
                    ? b.tower_id
                    : b.scope === 'carrier'
                      ? `every ${b.carrier} tower (${b.towers.length})`
                      : `every tower (${b.towers.length})`}
                </td>
                <td>
                  {b.status === 'ineffective' ? (
                    <span
                      class="status status-ineffective"
                      data-testid="block-ineffective"
                      title={`The tower acked the block, but ${b.events_since} events of this traffic were stored after it (last ${b.last_seen_at === null ? '' : ago(b.last_seen_at)})`}
                    >
                      ineffective: {b.events_since} events since
                    </span>
                  ) : (
                    <span class="status status-active">holding</span>
                  )}
                </td>
                <td>{b.created_by === 'auto' ? 'automatic' : b.created_by}</td>
                <td>{dateTime(b.created_at)}</td>
                <td>{b.expires_at === null ? 'lifted by hand' : dateTime(b.expires_at)}</td>
                <td class="num">{b.hits}</td>
                <td>{ago(b.last_hit_at)}</td>
                <td>
                  {ctx.me.can.write && (
                    <button type="button" data-testid="lift-block" disabled={lifting[b.block_id] === true} onClick={() => lift(b)}>
                      {lifting[b.block_id] === true ? 'Unblocking…' : 'Unblock'}
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

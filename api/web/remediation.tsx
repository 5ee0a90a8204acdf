/** The remediation log: every action taken, automatic or by hand, newest first; live outcomes on top. */
import { useEffect, useState } from 'preact/hooks';
import { qs } from './client.js';
import type { PageContext } from './context.js';
import type { RemediationMessage } from './live.js';
import { dateTime, Empty, ErrorNote, GridHead, Loading, useLoad } from './ui.js';

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
      <div class="toolbar">
        <label>
          Status
          <select value={status} onChange={(e) => setStatus(e.currentTarget.value)}>
            <option value="">all</option>
            {['success', 'failed', 'timeout', 'skipped_by_plan'].map((s) => (
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

/**
 * Notification outputs, for admins: the enterprise's webhooks (JSON or Slack), each with its
 * minimum severity and dedup window, enabled or not, and its last deliveries. A new output's
 * signing secret is shown once, right after it is made.
 */
import { useState } from 'preact/hooks';
import { qs } from './client.js';
import type { PageContext } from './context.js';
import { ago, Empty, ErrorNote, GridHead, Loading, useLoad } from './ui.js';

interface Output {
  output_id: string;
  name: string;
  url: string;
  format: 'json' | 'slack';
  min_severity: string;
  dedup_window_seconds: number;
  enabled: boolean;
  secret_hint: string;
}

interface Delivery {
  delivery_id: string;
  alert_id: string;
  status: 'delivered' | 'failed' | 'dropped';
  attempts: number;
  http_status: number | null;
  error: string | null;
  suppressed: number;
  at: string;
}

export function Outputs({ ctx }: { ctx: PageContext }) {
  const outputs = useLoad(() => ctx.api.get<{ outputs: Output[]; total: number }>(`/outputs${qs({ ...ctx.scope, limit: 50 })}`), ctx.enterpriseId, 30_000);
  const [secret, setSecret] = useState<{ name: string; secret: string } | null>(null);
  const [open, setOpen] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const change = (o: Output, body: Record<string, unknown>): void => {
    setError(null);
    ctx.api.call('PATCH', `/outputs/${o.output_id}`, { ...ctx.scope, ...body }).then(outputs.reload, setError);
  };
  const remove = (o: Output): void => {
    setError(null);
    ctx.api.call('DELETE', `/outputs/${o.output_id}${qs({ ...ctx.scope })}`).then(outputs.reload, setError);
  };
  const list = outputs.data?.outputs ?? [];
  return (
    <div class="panel" data-testid="outputs">
      <h2>Notifications {outputs.data !== null && <span class="status">{outputs.data.total}</span>}</h2>
      <p class="hint">
        Violations at or above an output's severity (and those whose rule says notify) are posted to it, signed, once per user, app and action per window.
      </p>
      <ErrorNote error={outputs.error ?? error} retry={outputs.reload} />
      {secret !== null && (
        <p class="notice" data-testid="output-secret">
          Signing secret of {secret.name}, shown only now: <code>{secret.secret}</code>{' '}
          <button type="button" onClick={() => setSecret(null)}>
            Done
          </button>
        </p>
      )}
      {outputs.data === null && outputs.error === null ? (
        <Loading what="outputs" />
      ) : list.length === 0 ? (
        <Empty>No output: violations are shown here only.</Empty>
      ) : (
        <table class="grid compact">
          <GridHead columns={['Name', 'URL', 'Format', 'From severity', 'Window', 'Secret', 'On', '']} />
          <tbody>
            {list.map((o) => (
              <>
                <tr key={o.output_id} data-testid="output" data-output-id={o.output_id}>
                  <td>{o.name}</td>
                  <td class="mono">{o.url}</td>
                  <td>{o.format}</td>
                  <td>{o.min_severity}</td>
                  <td>{o.dedup_window_seconds === 0 ? 'none' : `${o.dedup_window_seconds} s`}</td>
                  <td class="mono">{o.secret_hint}</td>
                  <td>
                    <input type="checkbox" data-testid="output-enabled" checked={o.enabled} onChange={(e) => change(o, { enabled: e.currentTarget.checked })} />
                  </td>
                  <td>
                    <button type="button" data-testid="output-deliveries" onClick={() => setOpen(open === o.output_id ? null : o.output_id)}>
                      {open === o.output_id ? 'Hide deliveries' : 'Deliveries'}
                    </button>{' '}
                    <button type="button" data-testid="output-delete" onClick={() => remove(o)}>
                      Remove
                    </button>
                  </td>
                </tr>
                {open === o.output_id && (
                  <tr key={`${o.output_id}-log`}>
                    <td colSpan={8}>
                      <Deliveries ctx={ctx} output={o} />
                    </td>
                  </tr>
                )}
              </>
            ))}
          </tbody>
        </table>
      )}
      <NewOutput ctx={ctx} onCreated={(name, s) => (setSecret({ name, secret: s }), outputs.reload())} />
    </div>
  );
}

function Deliveries({ ctx, output }: { ctx: PageContext; output: Output }) {
  const log = useLoad(
    () => ctx.api.get<{ deliveries: Delivery[] }>(`/outputs/${output.output_id}/deliveries${qs({ ...ctx.scope })}`),
    output.output_id,
    10_000,
  );
  const list = log.data?.deliveries ?? [];
  if (log.data === null && log.error === null) return <Loading what="deliveries" />;
  return (
    <div data-testid="deliveries">
      <ErrorNote error={log.error} retry={log.reload} />
      {list.length === 0 ? (
        <Empty>Nothing sent yet.</Empty>
      ) : (
        <table class="grid compact">
          <GridHead columns={['When', 'Alert', 'Status', ['Attempts', 'num'], 'HTTP', ['Held back', 'num'], 'Error']} />
          <tbody>
            {list.map((d) => (
              <tr key={d.delivery_id} data-testid="delivery" data-status={d.status}>
                <td>{ago(d.at)}</td>
                <td class="mono">{d.alert_id}</td>
                <td>
                  <span class={`outcome ${d.status === 'delivered' ? 'success' : 'failed'}`}>{d.status}</span>
                </td>
                <td class="num">{d.attempts}</td>
                <td>{d.http_status ?? '—'}</td>
                <td class="num">{d.suppressed}</td>
                <td>{d.error ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

function NewOutput({ ctx, onCreated }: { ctx: PageContext; onCreated: (name: string, secret: string) => void }) {
  const [open, setOpen] = useState(false);
  const [name, setName] = useState('');
  const [url, setUrl] = useState('');
  const [format, setFormat] = useState('json');
  const [severity, setSeverity] = useState('high');
  const [windowSeconds, setWindowSeconds] = useState('300');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  if (!open)
    return (
      <button type="button" data-testid="new-output" onClick={() => setOpen(true)}>
        New webhook
      </button>
    );
  const create = (e: Event): void => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    ctx.api
      .post<{ secret: string }>('/outputs', { ...ctx.scope, name, url, format, min_severity: severity, dedup_window_seconds: Number(windowSeconds) })
      .then((made) => {
        setOpen(false);
        setName('');
        setUrl('');
        onCreated(name, made.secret);
      }, setError)
      .finally(() => setBusy(false));
  };
  return (
    <form class="inline-form" data-testid="new-output-form" onSubmit={create}>
      <label>
        Name <input data-testid="new-output-name" required maxLength={100} value={name} disabled={busy} onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <label>
        URL{' '}
        <input
          data-testid="new-output-url"
          type="url"
          required
          placeholder="https://hooks.example.com/…"
          value={url}
          disabled={busy}
          onInput={(e) => setUrl(e.currentTarget.value)}
        />
      </label>
      <label>
        Format{' '}
        <select data-testid="new-output-format" value={format} disabled={busy} onChange={(e) => setFormat(e.currentTarget.value)}>
          <option value="json">JSON</option>
          <option value="slack">Slack</option>
        </select>
      </label>
      <label>
        From severity{' '}
        <select data-testid="new-output-severity" value={severity} disabled={busy} onChange={(e) => setSeverity(e.currentTarget.value)}>
          {['low', 'medium', 'high', 'critical'].map((s) => (
            <option value={s}>{s}</option>
          ))}
        </select>
      </label>
      <label>
        Window (s){' '}
        <input
          data-testid="new-output-window"
          type="number"
          min={0}
          max={86400}
          value={windowSeconds}
          disabled={busy}
          onInput={(e) => setWindowSeconds(e.currentTarget.value)}
        />
      </label>
      <button type="submit" class="primary" data-testid="create-output" disabled={busy || name.trim() === '' || url === ''}>
        {busy ? 'Adding…' : 'Add'}
      </button>
      <button type="button" disabled={busy} onClick={() => setOpen(false)}>
        Cancel
      </button>
      <ErrorNote error={error} />
    </form>
  );
}

/**
 * Devices: the ones towers discovered (live: `device.discovered` puts a new one on top), each
 * with onboarding to a user and rejection for admins; and the registered ones with last sighting.
 */
import { useEffect, useState } from 'preact/hooks';
import { qs } from './client.js';
import type { PageContext } from './context.js';
import type { DiscoveredDevice } from './live.js';
import { ago, Empty, ErrorNote, GridHead, Loading, useLoad } from './ui.js';

interface Registered {
  id: string;
  user_id: string | null;
  user_name: string | null;
  model: string;
  os: string;
  os_version: string;
  status: string;
  last_seen: string | null;
  last_tower_id: string | null;
}

interface User {
  id: string;
  name: string;
}

export function DevicesView({ ctx }: { ctx: PageContext }) {
  const [live, setLive] = useState<DiscoveredDevice[]>([]);
  const [gone, setGone] = useState<Set<string>>(new Set());
  const [note, setNote] = useState<string | null>(null);
  const discovered = useLoad(
    () => ctx.api.get<{ devices: DiscoveredDevice[]; total: number }>(`/devices/discovered${qs({ ...ctx.scope, limit: 100 })}`),
    ctx.enterpriseId,
    30_000,
  );
  const registered = useLoad(
    () => ctx.api.get<{ devices: Registered[]; total: number }>(`/devices${qs({ ...ctx.scope, limit: 100 })}`),
    ctx.enterpriseId,
    30_000,
  );
  const users = useLoad(() => ctx.api.get<{ users: User[] }>(`/users${qs({ ...ctx.scope, limit: 500 })}`), ctx.enterpriseId);

  useEffect(() => ctx.live.on('device.discovered', (m) => setLive((l) => [m.device, ...l.filter((d) => d.id !== m.device.id)].slice(0, 200))), [ctx]);

  const listed = discovered.data?.devices ?? [];
  const ids = new Set(listed.map((d) => d.id));
  const all = [...live.filter((d) => !ids.has(d.id)), ...listed].filter((d) => !gone.has(d.id));
  const done = (id: string, message: string): void => {
    setGone((g) => new Set(g).add(id));
    setNote(message);
    registered.reload();
  };

  return (
    <section class="devices-view">
      <div class="panel">
        <h2>
          Discovered devices <span class="count">{all.length}</span>
        </h2>
        <p class="hint">Devices the towers report on this enterprise's SIMs that are not registered yet. New ones appear here as towers report them.</p>
        {note && (
          <p class="state ok" role="status" data-testid="devices-note">
            {note}
          </p>
        )}
        <ErrorNote error={discovered.error} retry={discovered.reload} />
        {discovered.data === null && discovered.error === null ? (
          <Loading what="discovered devices" />
        ) : all.length === 0 ? (
          <Empty>No device waiting: every device towers reported is registered, rejected or retired.</Empty>
        ) : (
          <table class="grid" data-testid="discovered">
            <GridHead columns={['Device', 'Model · OS', 'First seen', 'Last seen', 'Carrier', ctx.me.can.write ? 'Onboard' : '']} />
            <tbody>
              {all.map((d) => (
                <DiscoveredRow key={d.id} ctx={ctx} device={d} users={users.data?.users ?? []} fresh={live.some((x) => x.id === d.id)} onDone={done} />
              ))}
            </tbody>
          </table>
        )}
      </div>
      <div class="panel">
        <h2>
          Registered devices <span class="count">{registered.data?.total ?? ''}</span>
        </h2>
        <ErrorNote error={registered.error} retry={registered.reload} />
        {registered.data === null && registered.error === null ? (
          <Loading what="registered devices" />
        ) : (registered.data?.devices.length ?? 0) === 0 ? (
          <Empty>No registered device yet.</Empty>
        ) : (
          <table class="grid" data-testid="registered">
            <GridHead columns={['Device', 'User', 'Model · OS', 'Status', 'Last seen']} />
            <tbody>
              {registered.data?.devices.map((d) => (
                <tr key={d.id} data-device-id={d.id}>
                  <td class="mono">{d.id}</td>
                  <td>{d.user_name ?? '—'}</td>
                  <td>
                    {d.model} · {d.os} {d.os_version}
                  </td>
                  <td>
                    <span class={`status status-${d.status}`}>{d.status}</span>
                  </td>
                  <td title={d.last_seen ?? ''}>
                    {ago(d.last_seen)}
                    {d.last_tower_id ? ` at ${d.last_tower_id}` : ''}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </div>
    </section>
  );
}

function DiscoveredRow({
  ctx,
  device: d,
  users,
  fresh,
  onDone,
}: {
  ctx: PageContext;
  device: DiscoveredDevice;
  users: User[];
  fresh: boolean;
  onDone: (id: string, message: string) => void;
}) {
  const [user, setUser] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const run = (p: Promise<unknown>, message: string): void => {
    setBusy(true);
    setError(null);
    p.then(
      () => onDone(d.id, message),
      (e: unknown) => {
        setBusy(false);
        setError(e);
      },
    );
  };
  const onboard = (): void => {
    const name = users.find((u) => u.id === user)?.name ?? user;
    run(
      ctx.api.post('/devices', { ...ctx.scope, device_id: d.id, user_id: user }),
      `${d.model} (${d.id}) is now ${name}'s: its usage is enforced under ${name}'s roles.`,
    );
  };
  return (
    <tr data-testid="discovered-row" data-device-id={d.id} class={fresh ? 'fresh' : ''}>
      <td class="mono">{d.id}</td>
      <td>
        {d.model} · {d.os} {d.os_version}
      </td>
      <td title={d.first_seen ?? ''}>
        {ago(d.first_seen)}
        {d.first_tower_location ? ` · ${d.first_tower_location}` : ''}
      </td>
      <td title={d.last_seen ?? ''}>
        {ago(d.last_seen)}
        {d.last_tower_location ? ` · ${d.last_tower_location}` : ''}
      </td>
      <td>{d.carrier_id ?? '—'}</td>
      <td>
        {ctx.me.can.write && (
          <div class="inline-form">
            <select data-testid="onboard-user" aria-label={`User for ${d.id}`} value={user} onChange={(e) => setUser(e.currentTarget.value)} disabled={busy}>
              <option value="">Assign to…</option>
              {users.map((u) => (
                <option value={u.id}>{u.name}</option>
              ))}
            </select>
            <button type="button" data-testid="onboard" class="primary" disabled={busy || user === ''} onClick={onboard}>
              Onboard
            </button>
            <button
              type="button"
              data-testid="reject"
              disabled={busy}
              onClick={() =>
                run(ctx.api.post(`/devices/${encodeURIComponent(d.id)}/reject`, { ...ctx.scope }), `${d.id} rejected: it will not be listed again.`)
              }
            >
              Reject
            </button>
          </div>
        )}
        <ErrorNote error={error} />
      </td>
    </tr>
  );
}

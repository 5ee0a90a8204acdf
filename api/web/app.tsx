/**
 * The page: sign-in, then the shell (enterprise, connection state, account, views by URL hash).
 * One live socket per signed-in enterprise, shared by every view.
 */
import { useEffect, useMemo, useState } from 'preact/hooks';
import { ApiClient, type Me } from './client.js';
import type { PageContext } from './context.js';
import { DevicesView } from './devices.js';
import { Feed } from './feed.js';
import { LiveSocket, type LiveState } from './live.js';
import { MetricsView } from './metrics.js';
import { PoliciesView } from './policies.js';
import { RemediationView } from './remediation.js';
import { describe, ErrorNote, Loading } from './ui.js';

const VIEWS = [
  { id: 'violations', label: 'Violations' },
  { id: 'metrics', label: 'Metrics' },
  { id: 'devices', label: 'Devices' },
  { id: 'policies', label: 'Policies' },
  { id: 'remediation', label: 'Remediation' },
] as const;
type ViewId = (typeof VIEWS)[number]['id'];

const viewOfHash = (): ViewId => {
  const id = location.hash.replace(/^#\/?/, '');
  return VIEWS.some((v) => v.id === id) ? (id as ViewId) : 'violations';
};

const api = new ApiClient();

export function App() {
  const [me, setMe] = useState<Me | null>(null);
  const [signedIn, setSignedIn] = useState(api.signedIn);
  const [notice, setNotice] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    api.onSessionEnded = (why) => {
      setNotice(why);
      setMe(null);
      setSignedIn(false);
    };
  }, []);
  useEffect(() => {
    if (!signedIn) return;
    setError(null);
    api.get<Me>('/me').then(setMe, (e: unknown) => setError(e));
  }, [signedIn]);

  if (!signedIn) {
    return (
      <Login
        notice={notice}
        onSignedIn={() => {
          setNotice(null);
          setSignedIn(true);
        }}
      />
    );
  }
  if (me === null) {
    return <div class="boot">{error === null ? <Loading what="your account" /> : <ErrorNote error={error} retry={() => setSignedIn(api.signedIn)} />}</div>;
  }
  return (
    <Shell
      me={me}
      onSignOut={() => {
        void api.logout();
        setMe(null);
        setSignedIn(false);
        setNotice('You are signed out.');
      }}
    />
  );
}

function Login({ notice, onSignedIn }: { notice: string | null; onSignedIn: () => void }) {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const submit = (e: Event): void => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    api.login(username.trim(), password).then(onSignedIn, (err: unknown) => {
      setBusy(false);
      setError(describe(err));
    });
  };
  return (
    <main class="login">
      <form onSubmit={submit} data-testid="login-form">
        <h1>towerwatch</h1>
        <p class="hint">Sign in to your enterprise's dashboard.</p>
        {notice && <p class="state">{notice}</p>}
        <label>
          Username
          <input
            name="username"
            autocomplete="username"
            placeholder="admin@acme"
            required
            value={username}
            onInput={(e) => setUsername(e.currentTarget.value)}
          />
        </label>
        <label>
          Password
          <input
            name="password"
            type="password"
            autocomplete="current-password"
            required
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </label>
        {error && (
          <p class="state error" role="alert" data-testid="login-error">
            {error}
          </p>
        )}
        <button type="submit" class="primary" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}

function Shell({ me, onSignOut }: { me: Me; onSignOut: () => void }) {
  const [view, setView] = useState<ViewId>(viewOfHash());
  const [enterpriseId, setEnterpriseId] = useState<string | null>(me.enterprise_id ?? me.enterprises[0]?.id ?? null);
  const [live, setLive] = useState<LiveState>('connecting');
  const [why, setWhy] = useState('');

  useEffect(() => {
    const onHash = (): void => setView(viewOfHash());
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);

  const ctx = useMemo<PageContext | null>(() => {
    if (enterpriseId === null) return null;
    const carrier = me.enterprise_id === null;
    const socket = new LiveSocket(
      () => api.token,
      carrier ? enterpriseId : null,
      () => void api.refresh().catch(() => undefined),
    );
    return { api, live: socket, me, enterpriseId, scope: carrier ? { enterprise_id: enterpriseId } : {} };
  }, [enterpriseId, me]);

  useEffect(() => {
    if (ctx === null) return undefined;
    api.onToken = (t) => ctx.live.renew(t);
    setLive(ctx.live.state);
    const off = ctx.live.onState((s, w) => {
      setLive(s);
      setWhy(w);
    });
    return () => {
      off();
      ctx.live.close();
    };
  }, [ctx]);

  const enterprise = me.enterprises.find((e) => e.id === enterpriseId);
  return (
    <div class="shell">
      <header class="top">
        <strong class="brand">towerwatch</strong>
        {me.enterprises.length > 1 ? (
          <select data-testid="enterprise" aria-label="Enterprise" value={enterpriseId ?? ''} onChange={(e) => setEnterpriseId(e.currentTarget.value)}>
            {me.enterprises.map((e) => (
              <option value={e.id}>{e.name}</option>
            ))}
          </select>
        ) : (
          <span class="enterprise" data-testid="enterprise-name">
            {enterprise?.name ?? 'no enterprise'}
          </span>
        )}
        {enterprise && <span class="plan">{enterprise.auto_remediation ? 'auto-remediation on' : 'alerts only'}</span>}
        <span class="spacer" />
        <span class={`live live-${live}`} data-testid="live-state" title={why}>
          {live === 'live' ? 'Live' : live === 'connecting' ? 'Connecting…' : live === 'reconnecting' ? 'Reconnecting…' : 'Offline'}
        </span>
        <span class="who" title={me.role}>
          {me.display_name} <small>({me.role.replace('_', ' ')})</small>
        </span>
        <button type="button" data-testid="sign-out" onClick={onSignOut}>
          Sign out
        </button>
      </header>
      <nav class="tabs">
        {VIEWS.map((v) => (
          <a href={`#/${v.id}`} class={v.id === view ? 'on' : ''} data-testid={`tab-${v.id}`} aria-current={v.id === view ? 'page' : undefined}>
            {v.label}
          </a>
        ))}
      </nav>
      <main class="content">
        {ctx === null ? (
          <p class="state empty">No enterprise uses your carrier's network yet.</p>
        ) : view === 'violations' ? (
          <Feed key={ctx.enterpriseId} ctx={ctx} />
        ) : view === 'metrics' ? (
          <MetricsView ctx={ctx} />
        ) : view === 'devices' ? (
          <DevicesView ctx={ctx} />
        ) : view === 'policies' ? (
          <PoliciesView ctx={ctx} />
        ) : (
          <RemediationView ctx={ctx} />
        )}
      </main>
    </div>
  );
}

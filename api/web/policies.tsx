/**
 * The enterprise's policies and their rules. An admin creates and deletes policies and rules,
 * edits a rule's permission, severity and remediation in place, previews an edit or a new rule
 * against the last 24 hours of stored events before saving it (POST /policy-previews), tries a
 * rule in shadow mode and reads what it would have done (GET /dashboard/shadow) before promoting
 * it, and sees each policy's version history with the decision cells each change touched and a
 * restore (rollback). A saved rule is recompiled by the pipeline within about a second, which
 * the page says, with the time it was saved.
 */
import { useState } from 'preact/hooks';
import { qs } from './client.js';
import type { PageContext } from './context.js';
import { Empty, ErrorNote, GridHead, Loading, SeverityBadge, time, useLoad } from './ui.js';

interface Rule {
  policy_rule_id: string;
  policy_id: string;
  role_id: string | null;
  app_id: string | null;
  app_name: string | null;
  app_category: string | null;
  action_id: string | null;
  action: string | null;
  permission: 'allow' | 'deny';
  severity: string | null;
  remediation: string | null;
  when: unknown;
  enabled: boolean;
  mode: 'enforce' | 'shadow';
  revision: number;
}

interface Policy {
  policy_id: string;
  name: string;
  description: string | null;
  default_permission: string;
  default_severity: string;
  enabled: boolean;
  mode: 'enforce' | 'shadow';
  role_ids: string[];
  rules: Rule[];
  revision: number;
}

interface Catalog {
  apps: Array<{ app_id: string; name: string; category: string }>;
  actions: Array<{ action_id: string; name: string }>;
  app_categories: string[];
}

const SEVERITIES = ['low', 'medium', 'high', 'critical'];
const REMEDIATIONS = ['notify', 'block_app', 'block_device'];

export function PoliciesView({ ctx }: { ctx: PageContext }) {
  const policies = useLoad(() => ctx.api.get<{ policies: Policy[] }>(`/policies${qs({ ...ctx.scope, limit: 100 })}`), ctx.enterpriseId);
  const roles = useLoad(() => ctx.api.get<{ roles: Array<{ id: string; name: string }> }>(`/roles${qs({ ...ctx.scope, limit: 500 })}`), ctx.enterpriseId);
  const catalog = useLoad(async (): Promise<Catalog> => {
    const [apps, actions] = await Promise.all([
      ctx.api.get<Pick<Catalog, 'apps' | 'app_categories'>>(`/apps${qs({ ...ctx.scope, limit: 500 })}`),
      ctx.api.get<Pick<Catalog, 'actions'>>(`/actions${qs({ ...ctx.scope, limit: 500 })}`),
    ]);
    return { apps: apps.apps, app_categories: apps.app_categories, actions: actions.actions };
  }, ctx.enterpriseId);
  const [saved, setSaved] = useState<string | null>(null);
  const roleName = (id: string | null): string => (id === null ? 'every role' : (roles.data?.roles.find((r) => r.id === id)?.name ?? id));
  // The view catches up with a write within a second or so: reload now and once more after.
  const changed = (what: string): void => {
    setSaved(`${what} at ${time(new Date().toISOString())}. The pipeline enforces it within a few seconds.`);
    policies.reload();
    setTimeout(policies.reload, 1500);
  };
  return (
    <section class="policies-view">
      {saved && (
        <p class="state ok" role="status" data-testid="policy-saved">
          {saved}
        </p>
      )}
      {ctx.me.can.write && <NewPolicy ctx={ctx} roles={roles.data?.roles ?? []} onCreated={(name) => changed(`Policy ${name} created`)} />}
      <ErrorNote error={policies.error} retry={policies.reload} />
      {policies.data === null ? (
        policies.error === null && <Loading what="policies" />
      ) : policies.data.policies.length === 0 ? (
        <Empty>This enterprise has no policy yet.</Empty>
      ) : (
        policies.data.policies.map((p) => (
          <div class="panel" data-testid="policy" data-policy-id={p.policy_id}>
            <h2>
              {p.name} {!p.enabled && <span class="status">disabled</span>}
              {p.mode === 'shadow' && <span class="status">shadow</span>}
            </h2>
            <p class="hint">
              {p.description ?? ''} Default: {p.default_permission}, severity {p.default_severity}. Roles: {p.role_ids.map(roleName).join(', ') || 'none'}.
            </p>
            {p.rules.length === 0 ? (
              <Empty>No rules: the default applies.</Empty>
            ) : (
              <table class="grid compact">
                <GridHead columns={['Role', 'App', 'Action', 'Permission', 'Severity', 'Remediation', '']} />
                <tbody>
                  {p.rules.map((r) => (
                    <RuleRow
                      key={`${r.policy_rule_id}:${r.revision}`}
                      ctx={ctx}
                      policy={p}
                      rule={r}
                      role={roleName(r.role_id)}
                      onSaved={(rule) =>
                        changed(
                          `Saved: ${rule.app_name ?? rule.app_category ?? 'any app'} · ${rule.action ?? 'any action'} is now ${rule.permission}${rule.mode === 'shadow' ? ' (shadow)' : ''}`,
                        )
                      }
                      onDeleted={() => changed(`Rule ${r.policy_rule_id} deleted`)}
                    />
                  ))}
                </tbody>
              </table>
            )}
            {ctx.me.can.write && catalog.data !== null && (
              <AddRule
                ctx={ctx}
                policy={p}
                catalog={catalog.data}
                roleName={roleName}
                onSaved={(rule) =>
                  changed(`Rule added: ${rule.app_name ?? rule.app_category ?? 'any app'} · ${rule.action ?? 'any action'} ${rule.permission}`)
                }
              />
            )}
            {(p.mode === 'shadow' || p.rules.some((r) => r.mode === 'shadow')) && <ShadowResults ctx={ctx} policyId={p.policy_id} />}
            <History ctx={ctx} policyId={p.policy_id} roleName={roleName} onRestored={policies.reload} />
            {ctx.me.can.write && <DeletePolicy ctx={ctx} policy={p} onDeleted={() => changed(`Policy ${p.name} deleted`)} />}
          </div>
        ))
      )}
    </section>
  );
}

/** `policy_` and 12 hex digits, as the api names one (getRandomValues: randomUUID needs HTTPS). */
function newPolicyId(): string {
  return `policy_${Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** A new, empty policy, assigned to the roles picked. */
function NewPolicy({ ctx, roles, onCreated }: { ctx: PageContext; roles: Array<{ id: string; name: string }>; onCreated: (name: string) => void }) {
  const [open, setOpen] = useState(false);
  const [name, setName] = useState('');
  const [permission, setPermission] = useState('allow');
  const [picked, setPicked] = useState<string[]>([]);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  // Named here, not by the server: Create again after a failure (say, of an assignment)
  // finishes this policy instead of making a second one. Assigning twice is harmless.
  const [policyId, setPolicyId] = useState(newPolicyId);
  if (!open)
    return (
      <button type="button" data-testid="new-policy" onClick={() => setOpen(true)}>
        New policy
      </button>
    );
  const create = (e: Event): void => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    void (async () => {
      try {
        await ctx.api.post('/policies', { ...ctx.scope, policy_id: policyId, name, default_permission: permission });
        for (const role of picked) await ctx.api.post('/roles/policies/assign', { ...ctx.scope, role_id: role, policy_id: policyId });
        setOpen(false);
        setName('');
        setPicked([]);
        setPolicyId(newPolicyId());
        onCreated(name);
      } catch (err) {
        setError(err);
      } finally {
        setBusy(false);
      }
    })();
  };
  return (
    <form class="panel inline-form" data-testid="new-policy-form" onSubmit={create}>
      <label>
        Name <input data-testid="new-policy-name" required maxLength={128} value={name} disabled={busy} onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <label>
        Default{' '}
        <select data-testid="new-policy-default" value={permission} disabled={busy} onChange={(e) => setPermission(e.currentTarget.value)}>
          <option value="allow">allow</option>
          <option value="deny">deny</option>
        </select>
      </label>
      <fieldset>
        <legend>Roles</legend>
        {roles.map((r) => (
          <label>
            <input
              type="checkbox"
              data-testid={`new-policy-role-${r.id}`}
              checked={picked.includes(r.id)}
              disabled={busy}
              onChange={(e) => setPicked(e.currentTarget.checked ? [...picked, r.id] : picked.filter((x) => x !== r.id))}
            />{' '}
            {r.name}
          </label>
        ))}
      </fieldset>
      <button type="submit" class="primary" data-testid="create-policy" disabled={busy || name.trim() === ''}>
        {busy ? 'Creating…' : 'Create'}
      </button>
      <button type="button" disabled={busy} onClick={() => setOpen(false)}>
        Cancel
      </button>
      <ErrorNote error={error} />
    </form>
  );
}

/** Delete in two steps: the second click says what goes with it. */
function DeletePolicy({ ctx, policy, onDeleted }: { ctx: PageContext; policy: Policy; onDeleted: () => void }) {
  const [asking, setAsking] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const remove = (): void => {
    ctx.api.call('DELETE', `/policies/${encodeURIComponent(policy.policy_id)}${qs({ ...ctx.scope })}`).then(onDeleted, (e: unknown) => setError(e));
  };
  return (
    <div class="inline-form">
      {asking ? (
        <>
          <button type="button" class="danger" data-testid="confirm-delete-policy" onClick={remove}>
            Delete {policy.name} and its {policy.rules.length} rules
          </button>
          <button type="button" onClick={() => setAsking(false)}>
            Keep it
          </button>
        </>
      ) : (
        <button type="button" class="link" data-testid="delete-policy" onClick={() => setAsking(true)}>
          Delete policy
        </button>
      )}
      <ErrorNote error={error} />
    </div>
  );
}

/** What the shadow-mode rules of a policy would have done over the last 24 h, where they differ from what was enforced. */
function ShadowResults({ ctx, policyId }: { ctx: PageContext; policyId: string }) {
  const [text, setText] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const load = (): void => {
    setError(null);
    ctx.api
      .get<{
        evaluated: number;
        would_deny: number;
        would_allow: number;
        top_users: Array<{ user_name: string; differing: number }>;
        top_apps: Array<{ app_name: string; differing: number }>;
      }>(`/dashboard/shadow${qs({ ...ctx.scope, policy_id: policyId, range: '24h' })}`)
      .then(
        (r) => {
          const top = (xs: Array<{ differing: number }>, name: (x: never) => string): string =>
            xs
              .slice(0, 3)
              .map((x) => `${name(x as never)} (${x.differing})`)
              .join(', ');
          setText(
            `Shadow mode, last 24 h: ${r.evaluated} events evaluated; it would have denied ${r.would_deny} that were allowed and allowed ${r.would_allow} that were denied.` +
              (r.top_users.length > 0 ? ` Most affected: ${top(r.top_users, (u: { user_name: string }) => u.user_name)}.` : '') +
              (r.top_apps.length > 0 ? ` Apps: ${top(r.top_apps, (a: { app_name: string }) => a.app_name)}.` : ''),
          );
        },
        (e: unknown) => setError(e),
      );
  };
  return (
    <div class="history" data-testid="shadow-results">
      <button type="button" class="link" data-testid="show-shadow" onClick={load}>
        Shadow results
      </button>
      <ErrorNote error={error} />
      {text !== null && (
        <p class="hint" data-testid="shadow-summary">
          {text}
        </p>
      )}
    </div>
  );
}

/** The end of a rule form: Cancel, the error if any, and the preview's sentence once there is one. */
function EditTail({
  busy,
  onCancel,
  error,
  preview,
  previewTestId,
}: {
  busy: boolean;
  onCancel: () => void;
  error: unknown;
  preview: string | null;
  previewTestId: string;
}) {
  return (
    <>
      <button type="button" disabled={busy} onClick={onCancel}>
        Cancel
      </button>
      <ErrorNote error={error} />
      {preview !== null && (
        <p class="hint" data-testid={previewTestId}>
          {preview}
        </p>
      )}
    </>
  );
}

/** The draft through POST /policy-previews (polled to the end), as a sentence. */
async function previewOf(ctx: PageContext, draft: Policy): Promise<string> {
  let job = await ctx.api.post<PreviewJob>('/policy-previews', { ...ctx.scope, policies: [draft], range: '24h' });
  for (let i = 0; job.status === 'running' && i < 200; i++) {
    await new Promise((r) => setTimeout(r, 300));
    job = await ctx.api.get<PreviewJob>(`/policy-previews/${job.preview_id}${qs({ ...ctx.scope })}`);
  }
  return previewText(job);
}

/** A new rule for `policy`: what it names, its verdict, enforced or in shadow mode; Preview before Save. */
function AddRule({
  ctx,
  policy,
  catalog,
  roleName,
  onSaved,
}: {
  ctx: PageContext;
  policy: Policy;
  catalog: Catalog;
  roleName: (id: string | null) => string;
  onSaved: (r: Rule) => void;
}) {
  const [open, setOpen] = useState(false);
  const [role, setRole] = useState('');
  const [target, setTarget] = useState('');
  const [action, setAction] = useState('');
  const [permission, setPermission] = useState<'allow' | 'deny'>('deny');
  const [severity, setSeverity] = useState('');
  const [remediation, setRemediation] = useState('');
  const [mode, setMode] = useState<'enforce' | 'shadow'>('enforce');
  const [busy, setBusy] = useState(false);
  const [preview, setPreview] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  if (!open)
    return (
      <button type="button" class="link" data-testid="add-rule" onClick={() => setOpen(true)}>
        Add rule
      </button>
    );
  const fields = (): Record<string, unknown> => {
    const f: Record<string, unknown> = { permission, mode };
    if (role !== '') f['role_id'] = role;
    if (target.startsWith('app:')) f['app_id'] = target.slice(4);
    if (target.startsWith('category:')) f['app_category'] = target.slice(9);
    if (action !== '') f['action_id'] = action;
    if (severity !== '') f['severity'] = severity;
    if (permission === 'deny' && remediation !== '') f['remediation'] = remediation;
    return f;
  };
  const run = (what: () => Promise<void>): void => {
    setBusy(true);
    setError(null);
    what()
      .catch((e: unknown) => setError(e))
      .finally(() => setBusy(false));
  };
  const select = (testId: string, label: string, value: string, set: (v: string) => void, options: Array<[string, string]>) => (
    <select aria-label={label} data-testid={testId} value={value} disabled={busy} onChange={(e) => set(e.currentTarget.value)}>
      {options.map(([v, text]) => (
        <option value={v}>{text}</option>
      ))}
    </select>
  );
  return (
    <div class="inline-form" data-testid="add-rule-form">
      {select('new-rule-role', 'role', role, setRole, [['', "the policy's roles"], ...policy.role_ids.map((r): [string, string] => [r, roleName(r)])])}
      {select('new-rule-app', 'app', target, setTarget, [
        ['', 'any app'],
        ...catalog.app_categories.map((c): [string, string] => [`category:${c}`, `any ${c}`]),
        ...catalog.apps.map((a): [string, string] => [`app:${a.app_id}`, a.name]),
      ])}
      {select('new-rule-action', 'action', action, setAction, [['', 'any action'], ...catalog.actions.map((a): [string, string] => [a.action_id, a.name])])}
      {select('new-rule-permission', 'permission', permission, (v) => setPermission(v as 'allow' | 'deny'), [
        ['deny', 'deny'],
        ['allow', 'allow'],
      ])}
      {select('new-rule-severity', 'severity', severity, setSeverity, [['', 'policy default'], ...SEVERITIES.map((x): [string, string] => [x, x])])}
      {permission === 'deny' &&
        select('new-rule-remediation', 'remediation', remediation, setRemediation, [
          ['', 'no remediation'],
          ...REMEDIATIONS.map((x): [string, string] => [x, x]),
        ])}
      {select('new-rule-mode', 'mode', mode, (v) => setMode(v as 'enforce' | 'shadow'), [
        ['enforce', 'enforce'],
        ['shadow', 'shadow mode (record only)'],
      ])}
      <button
        type="button"
        data-testid="preview-new-rule"
        disabled={busy}
        onClick={() =>
          run(async () => {
            setPreview(null);
            // As if enforced, in either mode: what it would do is the question.
            const rule = { policy_id: policy.policy_id, ...fields(), mode: 'enforce' } as unknown as Rule;
            const text = await previewOf(ctx, { ...policy, rules: [...policy.rules, rule] });
            setPreview(mode === 'shadow' ? `If enforced: ${text} In shadow mode it only records this.` : text);
          })
        }
      >
        Preview
      </button>
      <button
        type="button"
        class="primary"
        data-testid="save-new-rule"
        disabled={busy}
        onClick={() =>
          run(async () => {
            onSaved(await ctx.api.post<Rule>('/policy-rules', { ...ctx.scope, policy_id: policy.policy_id, ...fields() }));
            setOpen(false);
            setPreview(null);
          })
        }
      >
        Save
      </button>
      <EditTail busy={busy} onCancel={() => setOpen(false)} error={error} preview={preview} previewTestId="new-rule-preview" />
    </div>
  );
}

function RuleRow({
  ctx,
  policy,
  rule,
  role,
  onSaved,
  onDeleted,
}: {
  ctx: PageContext;
  policy: Policy;
  rule: Rule;
  role: string;
  onSaved: (r: Rule) => void;
  onDeleted: () => void;
}) {
  const [deleting, setDeleting] = useState(false);
  const [preview, setPreview] = useState<string | null>(null);
  const [previewing, setPreviewing] = useState(false);
  const [editing, setEditing] = useState(false);
  const [permission, setPermission] = useState(rule.permission);
  const [severity, setSeverity] = useState(rule.severity ?? '');
  const [remediation, setRemediation] = useState(rule.remediation ?? '');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const save = (mode = rule.mode): void => {
    setBusy(true);
    setError(null);
    const body: Record<string, unknown> = {
      ...ctx.scope,
      policy_rule_id: rule.policy_rule_id,
      policy_id: rule.policy_id,
      permission,
      enabled: rule.enabled,
      mode,
    };
    for (const [k, v] of [
      ['role_id', rule.role_id],
      ['app_id', rule.app_id],
      ['app_category', rule.app_id === null ? rule.app_category : null],
      ['action_id', rule.action_id],
      ['when', rule.when],
    ] as const)
      if (v !== null && v !== undefined) body[k] = v;
    if (severity !== '') body['severity'] = severity;
    if (remediation !== '') body['remediation'] = remediation;
    ctx.api.post<Rule>('/policy-rules', body).then(
      (r) => {
        setBusy(false);
        setEditing(false);
        onSaved(r);
      },
      (e: unknown) => {
        setBusy(false);
        setError(e);
      },
    );
  };
  // The edit against the last 24 h of stored events, before it is saved.
  const runPreview = (): void => {
    setPreviewing(true);
    setPreview(null);
    setError(null);
    const edited = { ...rule, permission, severity: severity === '' ? null : severity, remediation: remediation === '' ? null : remediation };
    const draft = { ...policy, rules: policy.rules.map((r) => (r.policy_rule_id === rule.policy_rule_id ? edited : r)) };
    previewOf(ctx, draft)
      .then(setPreview, (e: unknown) => setError(e))
      .finally(() => setPreviewing(false));
  };
  const remove = (): void => {
    setBusy(true);
    ctx.api.call('DELETE', `/policy-rules/${encodeURIComponent(rule.policy_rule_id)}${qs({ ...ctx.scope })}`).then(onDeleted, (e: unknown) => {
      setBusy(false);
      setError(e);
    });
  };
  const select = (value: string, set: (v: string) => void, options: string[], label: string, none?: string) => (
    <select aria-label={label} data-testid={`edit-${label}`} value={value} disabled={busy} onChange={(e) => set(e.currentTarget.value)}>
      {none !== undefined && <option value="">{none}</option>}
      {options.map((o) => (
        <option value={o}>{o}</option>
      ))}
    </select>
  );
  return (
    <tr data-testid="rule" data-rule-id={rule.policy_rule_id} data-app-id={rule.app_id ?? ''} data-action-id={rule.action_id ?? ''}>
      <td>{role}</td>
      <td>{rule.app_name ?? (rule.app_category ? `any ${rule.app_category}` : 'any app')}</td>
      <td>{rule.action ?? 'any action'}</td>
      {editing ? (
        <>
          <td>
            {select(
              permission,
              (v) => {
                setPermission(v as Rule['permission']);
                // A remediation acts on denials only (the rule language refuses one on an allow).
                if (v === 'allow') setRemediation('');
              },
              ['allow', 'deny'],
              'permission',
            )}
          </td>
          <td>{select(severity, setSeverity, SEVERITIES, 'severity', 'policy default')}</td>
          <td>{permission === 'allow' ? 'none' : select(remediation, setRemediation, REMEDIATIONS, 'remediation', 'none')}</td>
          <td class="inline-form">
            <button type="button" data-testid="preview-rule" disabled={busy || previewing} onClick={runPreview}>
              {previewing ? 'Previewing…' : 'Preview'}
            </button>
            <button type="button" class="primary" data-testid="save-rule" disabled={busy} onClick={() => save()}>
              {busy ? 'Saving…' : 'Save'}
            </button>
            <EditTail busy={busy} onCancel={() => setEditing(false)} error={error} preview={preview} previewTestId="preview-result" />
          </td>
        </>
      ) : (
        <>
          <td>
            <span class={`perm perm-${rule.permission}`}>{rule.permission}</span>
          </td>
          <td>{rule.severity ? <SeverityBadge severity={rule.severity} /> : 'default'}</td>
          <td>{rule.remediation ?? 'none'}</td>
          <td class="inline-form">
            {rule.mode === 'shadow' && <span class="status">shadow</span>}
            {ctx.me.can.write && (
              <>
                <button type="button" data-testid="edit-rule" onClick={() => setEditing(true)}>
                  Edit
                </button>
                {rule.mode === 'shadow' && (
                  <button type="button" data-testid="promote-rule" disabled={busy} onClick={() => save('enforce')}>
                    Enforce
                  </button>
                )}
                {deleting ? (
                  <>
                    <button type="button" class="danger" data-testid="confirm-delete-rule" disabled={busy} onClick={remove}>
                      Delete this rule
                    </button>
                    <button type="button" disabled={busy} onClick={() => setDeleting(false)}>
                      Keep it
                    </button>
                  </>
                ) : (
                  <button type="button" class="link" data-testid="delete-rule" onClick={() => setDeleting(true)}>
                    Delete
                  </button>
                )}
              </>
            )}
            <ErrorNote error={error} />
          </td>
        </>
      )}
    </tr>
  );
}

interface PreviewJob {
  preview_id: string;
  status: 'running' | 'done' | 'failed' | 'cancelled';
  error: string | null;
  result: {
    events_scanned: number;
    not_replayable: number;
    changed: { allow_to_deny: number; deny_to_allow: number; severity_changed: number; remediation_changed: number };
    top_users: Array<{ user_name: string; changed: number }>;
  } | null;
}

function previewText(job: PreviewJob): string {
  const r = job.result;
  if (job.status !== 'done' || r === null) return `The preview ${job.status}${job.error ? `: ${job.error}` : ''}.`;
  const c = r.changed;
  const who =
    r.top_users.length === 0
      ? ''
      : ` Most affected: ${r.top_users
          .slice(0, 3)
          .map((u) => `${u.user_name} (${u.changed})`)
          .join(', ')}.`;
  return (
    `Over the last 24 h, ${r.events_scanned} events replayed: ${c.allow_to_deny} would be denied, ${c.deny_to_allow} allowed, ` +
    `${c.severity_changed} change severity, ${c.remediation_changed} remediation` +
    (r.not_replayable > 0 ? ` (${r.not_replayable} not replayable)` : '') +
    `.${who}`
  );
}

interface Cell {
  role_id: string;
  app: string | null;
  app_category: string | null;
  action: string | null;
  conditions: Array<Record<string, unknown>>;
  change: string;
  before: { permission: string; severity: string | null; remediation: string | null };
  after: { permission: string; severity: string | null; remediation: string | null };
}

interface Diff {
  changes: Record<string, number>;
  changed_cells: number;
  changed: Cell[];
  truncated: boolean;
}

const CELLS_SHOWN = 10;

/** A version's change from its parent: the counts, then the first decision cells it changed. */
function DiffCells({ diff, roleName }: { diff: Diff | null; roleName: (id: string) => string }) {
  if (diff === null) return <p class="hint">The first version recorded.</p>;
  const verdict = (v: Cell['before']): string => `${v.permission}${v.severity ? ` ${v.severity}` : ''}${v.remediation ? ` + ${v.remediation}` : ''}`;
  return (
    <div data-testid="version-diff">
      <p class="hint">
        {diff.changed_cells} decision cells changed: {diff.changes['allow_to_deny'] ?? 0} allow→deny, {diff.changes['deny_to_allow'] ?? 0} deny→allow,{' '}
        {diff.changes['severity_changed'] ?? 0} severity, {diff.changes['remediation_changed'] ?? 0} remediation.
      </p>
      {diff.changed.length > 0 && (
        <table class="grid compact">
          <GridHead columns={['Role', 'App', 'Action', 'When', 'Before', 'After']} />
          <tbody>
            {diff.changed.slice(0, CELLS_SHOWN).map((c) => (
              <tr data-testid="diff-cell">
                <td>{roleName(c.role_id)}</td>
                <td>
                  {c.app ?? 'other apps'}
                  {c.app_category !== null ? ` · ${c.app_category}` : c.app === null ? '' : ' · other categories'}
                </td>
                <td>{c.action ?? 'other actions'}</td>
                <td>{c.conditions.length === 0 ? 'always' : c.conditions.map((x) => JSON.stringify(x)).join(' or ')}</td>
                <td>{verdict(c.before)}</td>
                <td>{verdict(c.after)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {diff.changed_cells > CELLS_SHOWN && <p class="hint">…and {diff.changed_cells - CELLS_SHOWN} more (GET /policy-versions/…/diff/… has them all).</p>}
    </div>
  );
}

interface VersionEntry {
  version: string;
  parent: string | null;
  author: string;
  created_at: string;
  changed: boolean;
  current: boolean;
}

/** A policy's version history: who changed it when, what changed (decision cells), restore. */
function History({ ctx, policyId, roleName, onRestored }: { ctx: PageContext; policyId: string; roleName: (id: string) => string; onRestored: () => void }) {
  const [open, setOpen] = useState(false);
  const [entries, setEntries] = useState<VersionEntry[] | null>(null);
  const [changes, setChanges] = useState<Record<string, Diff | null>>({});
  const [error, setError] = useState<unknown>(null);
  const load = (): void => {
    setError(null);
    ctx.api.get<{ versions: VersionEntry[] }>(`/policies/${encodeURIComponent(policyId)}/versions${qs({ ...ctx.scope, limit: 20 })}`).then(
      (r) => setEntries(r.versions),
      (e: unknown) => setError(e),
    );
  };
  const show = (v: VersionEntry): void => {
    ctx.api.get<{ diff_from_parent: Diff | null }>(`/policy-versions/${v.version}${qs({ ...ctx.scope })}`).then(
      (r) => setChanges((c) => ({ ...c, [`${v.version}:${v.created_at}`]: r.diff_from_parent })),
      (e: unknown) => setError(e),
    );
  };
  const restore = (v: VersionEntry): void => {
    ctx.api.post(`/policies/${encodeURIComponent(policyId)}/rollback`, { ...ctx.scope, version: v.version }).then(
      () => {
        onRestored();
        setTimeout(load, 1000);
      },
      (e: unknown) => setError(e),
    );
  };
  return (
    <div class="history" data-testid="policy-history">
      <button
        type="button"
        class="link"
        data-testid="show-history"
        onClick={() => {
          setOpen(!open);
          if (!open) load();
        }}
      >
        {open ? 'Hide history' : 'History'}
      </button>
      <ErrorNote error={error} />
      {open && entries !== null && (
        <ul>
          {entries.map((v) => (
            <li data-testid="version" data-version={v.version}>
              <code>{v.version.slice(0, 8)}</code> by {v.author}, {time(v.created_at)}
              {v.current ? ' (in force)' : ''}
              {v.changed ? '' : ' — this policy unchanged'}{' '}
              <button type="button" class="link" data-testid="show-diff" onClick={() => show(v)}>
                What changed
              </button>
              {ctx.me.can.write && !v.current && (
                <button type="button" class="link" data-testid="restore-version" onClick={() => restore(v)}>
                  Restore
                </button>
              )}
              {`${v.version}:${v.created_at}` in changes && <DiffCells diff={changes[`${v.version}:${v.created_at}`] ?? null} roleName={roleName} />}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

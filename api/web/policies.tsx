/**
 * The enterprise's policies and their rules; an admin edits a rule's permission, severity and
 * remediation in place, can preview the edit against the last 24 hours of stored events before
 * saving it (POST /policy-previews), and sees each policy's version history with what changed
 * and a restore (rollback). A saved rule is recompiled by the pipeline within about a second,
 * which the page says, with the time it was saved.
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
  revision: number;
}

interface Policy {
  policy_id: string;
  name: string;
  description: string | null;
  default_permission: string;
  default_severity: string;
  enabled: boolean;
  role_ids: string[];
  rules: Rule[];
}

const SEVERITIES = ['low', 'medium', 'high', 'critical'];
const REMEDIATIONS = ['notify', 'block_app', 'block_device'];

export function PoliciesView({ ctx }: { ctx: PageContext }) {
  const policies = useLoad(() => ctx.api.get<{ policies: Policy[] }>(`/policies${qs({ ...ctx.scope, limit: 100 })}`), ctx.enterpriseId);
  const roles = useLoad(() => ctx.api.get<{ roles: Array<{ id: string; name: string }> }>(`/roles${qs({ ...ctx.scope, limit: 500 })}`), ctx.enterpriseId);
  const [saved, setSaved] = useState<string | null>(null);
  const roleName = (id: string | null): string => (id === null ? 'every role' : (roles.data?.roles.find((r) => r.id === id)?.name ?? id));
  return (
    <section class="policies-view">
      {saved && (
        <p class="state ok" role="status" data-testid="policy-saved">
          {saved}
        </p>
      )}
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
                      onSaved={(rule) => {
                        setSaved(
                          `Saved at ${time(new Date().toISOString())}: ${rule.app_name ?? rule.app_category ?? 'any app'} · ${rule.action ?? 'any action'} is now ${rule.permission}. The pipeline enforces it within a few seconds.`,
                        );
                        policies.reload();
                      }}
                    />
                  ))}
                </tbody>
              </table>
            )}
            <History ctx={ctx} policyId={p.policy_id} onRestored={policies.reload} />
          </div>
        ))
      )}
    </section>
  );
}

function RuleRow({ ctx, policy, rule, role, onSaved }: { ctx: PageContext; policy: Policy; rule: Rule; role: string; onSaved: (r: Rule) => void }) {
  const [preview, setPreview] = useState<string | null>(null);
  const [previewing, setPreviewing] = useState(false);
  const [editing, setEditing] = useState(false);
  const [permission, setPermission] = useState(rule.permission);
  const [severity, setSeverity] = useState(rule.severity ?? '');
  const [remediation, setRemediation] = useState(rule.remediation ?? '');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const save = (): void => {
    setBusy(true);
    setError(null);
    const body: Record<string, unknown> = { ...ctx.scope, policy_rule_id: rule.policy_rule_id, policy_id: rule.policy_id, permission, enabled: rule.enabled };
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
    void (async () => {
      try {
        let job = await ctx.api.post<PreviewJob>('/policy-previews', { ...ctx.scope, policies: [draft], range: '24h' });
        for (let i = 0; job.status === 'running' && i < 200; i++) {
          await new Promise((r) => setTimeout(r, 300));
          job = await ctx.api.get<PreviewJob>(`/policy-previews/${job.preview_id}${qs({ ...ctx.scope })}`);
        }
        setPreview(previewText(job));
      } catch (e) {
        setError(e);
      } finally {
        setPreviewing(false);
      }
    })();
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
            <button type="button" class="primary" data-testid="save-rule" disabled={busy} onClick={save}>
              {busy ? 'Saving…' : 'Save'}
            </button>
            <button type="button" disabled={busy} onClick={() => setEditing(false)}>
              Cancel
            </button>
            <ErrorNote error={error} />
            {preview !== null && (
              <p class="hint" data-testid="preview-result">
                {preview}
              </p>
            )}
          </td>
        </>
      ) : (
        <>
          <td>
            <span class={`perm perm-${rule.permission}`}>{rule.permission}</span>
          </td>
          <td>{rule.severity ? <SeverityBadge severity={rule.severity} /> : 'default'}</td>
          <td>{rule.remediation ?? 'none'}</td>
          <td>
            {ctx.me.can.write && (
              <button type="button" data-testid="edit-rule" onClick={() => setEditing(true)}>
                Edit
              </button>
            )}
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

interface VersionEntry {
  version: string;
  parent: string | null;
  author: string;
  created_at: string;
  changed: boolean;
  current: boolean;
}

/** A policy's version history: who changed it when, what changed (decision cells), restore. */
function History({ ctx, policyId, onRestored }: { ctx: PageContext; policyId: string; onRestored: () => void }) {
  const [open, setOpen] = useState(false);
  const [entries, setEntries] = useState<VersionEntry[] | null>(null);
  const [changes, setChanges] = useState<Record<string, string>>({});
  const [error, setError] = useState<unknown>(null);
  const load = (): void => {
    setError(null);
    ctx.api.get<{ versions: VersionEntry[] }>(`/policies/${encodeURIComponent(policyId)}/versions${qs({ ...ctx.scope, limit: 20 })}`).then(
      (r) => setEntries(r.versions),
      (e: unknown) => setError(e),
    );
  };
  const show = (v: VersionEntry): void => {
    ctx.api
      .get<{ diff_from_parent: { changes: Record<string, number>; changed_cells: number } | null }>(`/policy-versions/${v.version}${qs({ ...ctx.scope })}`)
      .then(
        (r) => {
          const d = r.diff_from_parent;
          const text =
            d === null
              ? 'The first version recorded.'
              : `${d.changed_cells} decision cells changed: ${d.changes['allow_to_deny'] ?? 0} allow→deny, ${d.changes['deny_to_allow'] ?? 0} deny→allow, ${d.changes['severity_changed'] ?? 0} severity, ${d.changes['remediation_changed'] ?? 0} remediation.`;
          setChanges((c) => ({ ...c, [`${v.version}:${v.created_at}`]: text }));
        },
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
              <button type="button" class="link" onClick={() => show(v)}>
                What changed
              </button>
              {ctx.me.can.write && !v.current && (
                <button type="button" class="link" data-testid="restore-version" onClick={() => restore(v)}>
                  Restore
                </button>
              )}
              {changes[`${v.version}:${v.created_at}`] && <p class="hint">{changes[`${v.version}:${v.created_at}`]}</p>}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

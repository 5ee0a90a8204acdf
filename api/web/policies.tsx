/**
 * The enterprise's policies and their rules; an admin edits a rule's permission, severity and
 * remediation in place. A saved rule is recompiled by the pipeline within about a second, which
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
          </div>
        ))
      )}
    </section>
  );
}

function RuleRow({ ctx, rule, role, onSaved }: { ctx: PageContext; rule: Rule; role: string; onSaved: (r: Rule) => void }) {
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
            <button type="button" class="primary" data-testid="save-rule" disabled={busy} onClick={save}>
              {busy ? 'Saving…' : 'Save'}
            </button>
            <button type="button" disabled={busy} onClick={() => setEditing(false)}>
              Cancel
            </button>
            <ErrorNote error={error} />
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

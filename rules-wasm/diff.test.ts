/** The semantic diff (diff.ts): exact cells on hand-made changes, agreement with the evaluator on a world, the CLI. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { createTrafficGenerator } from '../fixtures/traffic.js';
import { BRIEF, generateWorld } from '../fixtures/world.js';
import { worldDirectory, worldPolicyInputs } from '../fixtures/worldPolicies.js';
import { diffPolicySets, diffText } from './diff.js';
import { enrichEvent } from './enrich.js';
import type { EvalEvent } from './event.js';
import { normalizePolicies } from './language.js';
import { evaluateReference, ruleChecks } from './reference.js';

const base = {
  policy_id: 'p',
  name: 'P',
  role_ids: ['eng', 'sales'],
  rules: [
    { rule_id: 'no-upload', app_name: 'Drive', action: 'Upload', permission: 'deny', severity: 'high' },
    { rule_id: 'social', app_category: 'social', permission: 'deny', severity: 'low' },
  ],
};
const withRules = (rules: unknown[]): unknown => ({ ...base, rules });
const diff = (before: unknown, after: unknown) => diffPolicySets(normalizePolicies(before), normalizePolicies(after));

describe('diffPolicySets', () => {
  it('the same policies: nothing changes; a renumbering alone is no change', () => {
    assert.equal(diff(base, base).changed.length, 0);
    const reordered = diff(base, withRules([...base.rules].reverse()));
    assert.deepEqual(reordered.changed, []);
  });

  it('a severity change is the cells of that rule, for each of its roles', () => {
    const d = diff(base, withRules([{ ...base.rules[0], severity: 'critical' }, base.rules[1]]));
    assert.deepEqual(d.changes, { allow_to_deny: 0, deny_to_allow: 0, severity_changed: 4, remediation_changed: 0 });
    // Drive × Upload, for both roles, with Drive in the social category or any other (the social rule is low).
    assert.deepEqual(
      d.changed.map((c) => [c.role_id, c.app, c.app_category, c.action, c.before.severity, c.after.severity]).sort(),
      [
        ['eng', 'Drive', 'social', 'Upload', 'high', 'critical'],
        ['eng', 'Drive', null, 'Upload', 'high', 'critical'],
        ['sales', 'Drive', 'social', 'Upload', 'high', 'critical'],
        ['sales', 'Drive', null, 'Upload', 'high', 'critical'],
      ].sort(),
    );
  });

  it("with the catalog's categories, a named app is only in its own category: the cells no event can reach are left out", () => {
    const after = normalizePolicies(withRules([{ ...base.rules[0], severity: 'critical' }, base.rules[1]]));
    const catalog = new Map([['Drive', 'file_sharing']]);
    const d = diffPolicySets(normalizePolicies(base), after, { appCategory: (app) => catalog.get(app) });
    // Drive is file_sharing, which no rule names: it falls in "any other category" only.
    assert.deepEqual(d.changed.map((c) => [c.role_id, c.app, c.app_category]).sort(), [
      ['eng', 'Drive', null],
      ['sales', 'Drive', null],
    ]);
    const social = new Map([['Drive', 'social']]);
    const s = diffPolicySets(normalizePolicies(base), after, { appCategory: (app) => social.get(app) });
    assert.deepEqual(s.changed.map((c) => [c.role_id, c.app, c.app_category]).sort(), [
      ['eng', 'Drive', 'social'],
      ['sales', 'Drive', 'social'],
    ]);
  });

  it('a removed rule turns its cells to allow; a remediation is a change of its own', () => {
    const d = diff(base, withRules([base.rules[0]]));
    assert.equal(d.changes.deny_to_allow, d.changed.length);
    assert.ok(d.changed.every((c) => c.app_category === 'social' && c.before.rule_id === 'social' && c.after.permission === 'allow'));
    const r = diff(base, withRules([{ ...base.rules[0], remediation: 'block_app' }, base.rules[1]]));
    assert.equal(r.changes.remediation_changed, 4);
    assert.ok(r.changed.every((c) => c.after.remediation === 'block_app' && c.before.remediation === null));
  });

  it('a conditional rule changes only the condition class where its conditions hold', () => {
    const office = {
      rule_id: 'chat-office',
      app_name: 'Chat',
      role_id: 'eng',
      permission: 'deny',
      severity: 'medium',
      when: { time: { from: '09:00', to: '17:00' } },
    };
    const d = diff(base, withRules([...base.rules, office]));
    assert.ok(d.changed.length > 0);
    for (const c of d.changed) {
      assert.equal(c.role_id, 'eng');
      assert.equal(c.app, 'Chat');
      assert.deepEqual(c.conditions, [{ time: { from: '09:00', to: '17:00' } }]);
    }
    // Chat in the social category is already a (low) deny: severity; elsewhere allow → deny.
    assert.deepEqual([...new Set(d.changed.map((c) => `${c.app_category}:${c.change}`))].sort(), ['null:allow_to_deny', 'social:severity_changed']);
    assert.match(
      diffText(d),
      /role eng × Chat in social × any other action when \{"time":\{"from":"09:00","to":"17:00"\}\}: deny low \(social\) → deny medium \(chat-office\)/,
    );
  });

  it("agrees with the evaluator on a world's traffic: a single-role event's verdict changes exactly when its cell is listed", () => {
    const world = generateWorld({ seed: 8, enterprises: 3, usersPerEnterprise: 8, towers: 5 });
    const dir = worldDirectory(world);
    const acme = world.enterprises.find((e) => e.id === BRIEF.acme)!;
    const inputs = worldPolicyInputs(world, acme.id);
    // Flip every third rule's permission, raise severities of the others, drop one policy's last rule.
    const changed = inputs.map((p, pi) => ({
      ...p,
      rules: (p.rules ?? [])
        .filter((_, ri, all) => !(pi === 0 && ri === all.length - 1))
        .map((r, ri) =>
          ri % 3 === 0
            ? { ...r, permission: r.permission === 'deny' ? 'allow' : 'deny', severity: undefined, remediation: undefined }
            : r.permission === 'deny'
              ? { ...r, severity: 'critical' }
              : r,
        ),
    }));
    const a = normalizePolicies(inputs, { timezone: acme.timezone });
    const b = normalizePolicies(changed, { timezone: acme.timezone });
    const d = diffPolicySets(a, b);
    assert.ok(d.changed.length > 0);
    const listed = new Set(d.changed.filter((c) => c.conditions.length === 0).map((c) => `${c.role_id}|${c.app}|${c.app_category}|${c.action}`));
    const named = (values: string[], v: string | undefined): string | null => (v !== undefined && values.includes(v) ? v : null);
    const apps = [...new Set([...a.rules, ...b.rules].flatMap((r) => (r.app.kind === 'app' ? [r.app.key] : [])))];
    const cats = [...new Set([...a.rules, ...b.rules].flatMap((r) => (r.app.kind === 'category' ? [r.app.category] : [])))];
    const actions = [...new Set([...a.rules, ...b.rules].flatMap((r) => (r.action.kind === 'action' ? [r.action.key] : [])))];
    let compared = 0;
    let differing = 0;
    for (const frame of createTrafficGenerator(world, { seed: 4, violationRatio: 0.3 }).nextEvents(4000)) {
      for (const ev of frame.events) {
        const en = enrichEvent(dir, ev);
        if (!en.enforced || en.enterpriseId !== acme.id) continue;
        for (const role of en.event.role_ids) {
          const one: EvalEvent = { ...en.event, role_ids: [role] };
          // Cells with conditional rules are compared per condition class: checked by hand above.
          const roles = new Set([role]);
          const conditional = [...a.rules, ...b.rules].some(
            (r) =>
              r.conditions !== null &&
              [...ruleChecks(r, roles, one, a.timezone)].filter((c) => ['role', 'app', 'app_category', 'action'].includes(c.test)).every((c) => c.held),
          );
          if (conditional) continue;
          const va = evaluateReference(a, one);
          const vb = evaluateReference(b, one);
          const differs = va.permission !== vb.permission || va.severity !== vb.severity || va.remediation !== vb.remediation;
          const key: string = `${role}|${named(apps, one.app)}|${named(cats, one.app_category)}|${named(actions, one.action)}`;
          assert.equal(listed.has(key), differs, `${key}: ${JSON.stringify(va)} → ${JSON.stringify(vb)}`);
          compared++;
          if (differs) differing++;
        }
      }
    }
    assert.ok(compared > 500 && differing > 20, `${compared} events compared, ${differing} changed`);
  });
});

describe('towerwatch rules diff', () => {
  const cli = join(import.meta.dirname, '..', 'bin', 'towerwatch.js');
  const run = promisify(execFile);
  let dir = '';
  after(() => rm(dir, { recursive: true, force: true }));

  it('prints the counts and the cells, or JSON', async () => {
    dir = await mkdtemp(join(tmpdir(), 'tw-diff-'));
    await writeFile(join(dir, 'a.json'), JSON.stringify(base));
    await writeFile(join(dir, 'b.json'), JSON.stringify(withRules([{ ...base.rules[0], severity: 'critical' }, base.rules[1]])));
    const text = await run(process.execPath, [cli, 'rules', 'diff', join(dir, 'a.json'), join(dir, 'b.json')]);
    assert.match(text.stdout, /^4 of \d+ decision classes change \(\d+ cells\): 0 allow→deny, 0 deny→allow, 4 severity, 0 remediation\n/);
    assert.match(text.stdout, /role eng × Drive × Upload: deny high \(no-upload\) → deny critical \(no-upload\)/);
    const json = JSON.parse((await run(process.execPath, [cli, 'rules', 'diff', '--json', join(dir, 'a.json'), join(dir, 'b.json')])).stdout);
    assert.equal(json.changed.length, 4);
    await assert.rejects(run(process.execPath, [cli, 'rules', 'diff', join(dir, 'a.json'), join(dir, 'missing.json')]), /missing\.json: no such file/);
  });
});

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../bin/towerwatch.js', import.meta.url));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function towerwatch(args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

describe('towerwatch rules', () => {
  let dir = '';
  let env: NodeJS.ProcessEnv = {};
  const file = (name: string): string => join(dir, name);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tw-rules-cli-'));
    env = { XDG_CACHE_HOME: join(dir, 'cache') };
    await writeFile(
      file('policy.json'),
      JSON.stringify([
        {
          policy_id: 'policy123',
          name: 'Admin Policy',
          role_ids: ['role123'],
          timezone: 'America/New_York',
          rules: [
            { app_name: 'Slack', action: 'Upload File', permission: 'deny', severity: 'high', remediation: 'block_device' },
            { app_name: 'Zoom', action: 'Start Meeting', permission: 'allow' },
            { app_category: 'social', permission: 'deny', when: { time: { from: '09:00', to: '17:00' } } },
          ],
        },
        { policy_id: 'policy124', name: 'Contractors', role_ids: ['role456'], default_permission: 'deny', rules: [] },
      ]),
    );
    await writeFile(
      file('events.jsonl'),
      [
        { role_id: 'role123', app_name: 'Slack', action: 'Upload File' },
        { role_id: 'role123', app_name: 'Zoom', action: 'Start Meeting' },
        {},
        { role_ids: ['role456'], app_id: 'app9', action_id: 'a1' },
        { role_id: 'role123', app_name: 'TikTok', app_category: 'social', action: 'Post', ts: '2026-11-25T15:00:00Z' },
        { role_id: 'role123', app_name: 'TikTok', app_category: 'social', action: 'Post', ts: Date.parse('2026-11-25T23:00:00Z') },
        { role_id: 'nobody', app_name: 'Slack', action: 'Upload File' },
      ]
        .map((e) => (Object.keys(e).length ? JSON.stringify(e) : ''))
        .join('\n'),
    );
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('check prints the module hash and rule count, then hits the cache', async () => {
    const first = await towerwatch(['rules', 'check', file('policy.json')], env);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /^ok: 2 policies, 3 rules \(1 conditional\), module [0-9a-f]{16}, \d+ bytes of WASM, \d+ decision cells, compiled in \d+ ms\n$/);
    const second = await towerwatch(['rules', 'check', file('policy.json')], env);
    assert.match(second.stdout, /from the disk cache/);
    assert.equal(second.stdout.match(/module (\w+)/)?.[1], first.stdout.match(/module (\w+)/)?.[1]);
  });

  it('eval prints one verdict per event line, in order, the same with --reference', async () => {
    const wasm = await towerwatch(['rules', 'eval', file('policy.json'), file('events.jsonl')], env);
    assert.equal(wasm.code, 0, wasm.stderr);
    const verdicts = wasm.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(verdicts, [
      { permission: 'deny', rule_id: 'policy123#1', policy_id: 'policy123', severity: 'high', remediation: 'block_device' },
      { permission: 'allow', rule_id: 'policy123#2', policy_id: 'policy123', severity: null, remediation: null },
      { permission: 'deny', rule_id: null, policy_id: 'policy124', severity: 'medium', remediation: null },
      { permission: 'deny', rule_id: 'policy123#3', policy_id: 'policy123', severity: 'medium', remediation: null },
      { permission: 'allow', rule_id: null, policy_id: 'policy123', severity: null, remediation: null },
      { permission: 'allow', rule_id: null, policy_id: null, severity: null, remediation: null },
    ]);
    const reference = await towerwatch(['rules', 'eval', '--reference', file('policy.json'), file('events.jsonl')], env);
    assert.equal(reference.stdout, wasm.stdout);
  });

  it('check points at the offending rule and field and exits 1', async () => {
    await writeFile(
      file('bad.json'),
      JSON.stringify({
        policy_id: 'p',
        name: 'P',
        rules: [
          { rule_id: 'r1', permission: 'allow' },
          { rule_id: 'r2', permission: 'deny', when: { time: { from: '9', to: '17:00' } } },
        ],
      }),
    );
    const run = await towerwatch(['rules', 'check', file('bad.json')], env);
    assert.equal(run.code, 1);
    assert.equal(run.stdout, '');
    assert.match(run.stderr, /bad\.json: 1 problem in the policy:\n {2}policies\[0\] \(p\)\.rules\[1\] \(r2\)\.when\.time\.from: '9' is not a time of day/);
  });

  it('eval names the line of a bad event and missing files', async () => {
    await writeFile(file('bad.jsonl'), '{"role_id":"role123","app_name":"Slack"}\n{"role_id":"role123","bytes_up":-1}\n');
    const run = await towerwatch(['rules', 'eval', file('policy.json'), file('bad.jsonl')], env);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /bad\.jsonl:2: bytes_up: /);
    const missing = await towerwatch(['rules', 'check', file('nope.json')], env);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /nope\.json: no such file/);
  });
});

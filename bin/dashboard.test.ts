/**
 * The dashboard page in a real browser (Debian's chromium driven by playwright-core) against
 * `towerwatch up` with the simulator: sign-in, the live feed, filters, blocking a device,
 * metrics, onboarding a discovered device, editing a rule and seeing verdicts change, sign-out,
 * what a viewer may not do, a carrier operator switching enterprise, a narrow screen, and the
 * feed under 1,000 alerts/s (measured and reported, not asserted). Screenshots of the main views
 * go to test-results/browser/.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { jetstream } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { chromium, type Browser, type BrowserContext, type Page, type WebSocketRoute } from 'playwright-core';
import { alertsSubject, encodeAlerts, type Alert } from '../core/live.js';
import { connectNats } from '../core/nats/index.js';
import { signature, SIGNATURE_HEADER, TIMESTAMP_HEADER } from '../core/outputs.js';
import { briefAlert, briefEvent, publishFrame } from '../fixtures/briefEvents.js';
import { BRIEF } from '../fixtures/world.js';
import { startUp, upEnv, type Up } from './upHarness.js';

export const CHROMIUM = process.env['TOWERWATCH_CHROMIUM'] ?? '/usr/bin/chromium';
/** The flags that work on these machines (ARCHITECTURE.md): no sandbox as root, no background traffic. */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const RESULTS = fileURLToPath(new URL('../../test-results/browser/', import.meta.url));
const PASSWORD = 'towerwatch-demo';

let up: Up;
let api: string;
let natsUrl: string;
let browser: Browser;
let nc: NatsConnection;
/** A page kept open for the whole file, past its first access token's lifetime. */
let watcher: Page;
let watcherFirstToken: string;
let watcherSince: number;
/** Short-lived access tokens, so that the page's silent renewal is exercised within the file. */
const ACCESS_TTL_SECONDS = 70;

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`no browser at ${CHROMIUM}: run bin/setup (it installs Debian's chromium), or set TOWERWATCH_CHROMIUM`);
  mkdirSync(RESULTS, { recursive: true });
  const { env } = await upEnv();
  // The test polls the api as fast as the page does; the rate limit is not what is tested here.
  up = startUp(['--rate', '2000'], { ...env, TOWERWATCH_ACCESS_TTL_SECONDS: String(ACCESS_TTL_SECONDS), TOWERWATCH_RATE_LIMIT: '1000000' });
  await up.waitForOutput([/^up: sign in as admin@acme/m, /^pipeline: discovery worker/m], 90_000);
  api = up.apiUrl;
  natsUrl = up.natsUrl;
  nc = await connectNats(natsUrl, 'dashboard test', { maxReconnectAttempts: 0 });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  watcher = await signIn('analyst@acme');
  watcherFirstToken = await tokenOf(watcher);
  watcherSince = Date.now();
});

after(async () => {
  await browser?.close();
  await nc?.close();
  up?.child.kill('SIGINT');
  await up?.waitForExit(20_000).catch(() => up.kill());
});

/** Runs `body` on a signed-in page, then closes the page's browser context. A failure says what errors the page shows. */
async function withPage(page: Page, body: (page: Page) => Promise<void>): Promise<void> {
  try {
    await body(page);
  } catch (err) {
    const shown = await page
      .getByRole('alert')
      .allInnerTexts()
      .catch(() => []);
    if (shown.length > 0 && err instanceof Error) err.message += `\nthe page shows: ${shown.join(' | ')}`;
    throw err;
  } finally {
    await page.context().close();
  }
}

async function signIn(username: string, viewport = { width: 1280, height: 800 }, prepare?: (context: BrowserContext) => Promise<void>): Promise<Page> {
  const context = await browser.newContext({ viewport });
  await prepare?.(context);
  const page = await context.newPage();
  page.on('pageerror', (e) => process.stderr.write(`page error (${username}): ${e.message}\n`));
  await page.goto(api);
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByTestId('live-state').filter({ hasText: 'Live' }).waitFor({ timeout: 20_000 });
  return page;
}

const shot = (page: Page, name: string): Promise<Buffer> => page.screenshot({ path: join(RESULTS, `${name}.png`), fullPage: false });
// In-page code as strings: this file is compiled without the DOM's types.
const received = (page: Page): Promise<number> => page.evaluate<number>('window.__towerwatch?.feed.received ?? 0');
/** A token of the page's session, for calling the api as the page's account. */
const tokenOf = (page: Page): Promise<string> => page.evaluate<string>("JSON.parse(sessionStorage.getItem('towerwatch.session') ?? '{}').access");
async function call(token: string, method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const r = await fetch(`${api}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, json: r.status === 204 ? null : await r.json() };
}
async function until(what: string, ms: number, cond: () => Promise<boolean> | boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('the dashboard page', () => {
  it('an admin signs in; the live feed grows; filters, pause and details work; Block device is carried out', async () => {
    await withPage(await signIn('admin@acme'), async (page) => {
      await page.getByTestId('alert-row').first().waitFor({ timeout: 60_000 });
      const first = await received(page);
      await until('the feed to grow', 30_000, async () => (await received(page)) > first);
      assert.equal(await page.getByTestId('enterprise-name').textContent(), 'Acme Corp');
      await shot(page, 'feed');

      // Filter by the severity of the newest alert: every row shown has it.
      const severity = (await page.getByTestId('alert-row').first().getAttribute('data-severity')) ?? assert.fail('a severity');
      await page.getByTestId('filter-severity').selectOption(severity);
      const severities = await page.evaluate<string[]>("[...document.querySelectorAll('[data-testid=alert-row]')].map((r) => r.getAttribute('data-severity'))");
      assert.ok(severities.length > 0 && severities.every((s) => s === severity), `only ${severity}: ${severities.join(',')}`);
      await page.getByTestId('filter-severity').selectOption('');

      // Paused, the list holds still while alerts keep coming; resumed, they are shown.
      await page.getByTestId('pause').click();
      const top = await page.getByTestId('alert-row').first().getAttribute('data-alert-id');
      const at = await received(page);
      await until('more alerts while paused', 30_000, async () => (await received(page)) > at);
      await page.waitForTimeout(300);
      assert.equal(await page.getByTestId('alert-row').first().getAttribute('data-alert-id'), top, 'the paused feed did not move');
      await page.getByTestId('resume').click();

      // A violation without an automatic remediation, blocked by hand.
      const row = page.locator('[data-testid="alert-row"][data-remediation=""]').first();
      await row.waitFor({ timeout: 60_000 });
      const alertId = (await row.getAttribute('data-alert-id')) ?? assert.fail('an alert id');
      await page.getByTestId('pause').click();
      await page.locator(`[data-testid="alert-row"][data-alert-id="${alertId}"]`).click();
      const detail = page.getByTestId('alert-detail');
      await detail.waitFor();
      // Why: the stored event replayed through the version that decided it.
      await detail.getByTestId('explain').click();
      const why = detail.getByTestId('explanation');
      await why.getByText(/^Decided by (rule \S+ of policy|the default of policy) \S+: deny/).waitFor({ timeout: 10_000 });
      assert.match((await why.textContent()) ?? '', /Policy version [0-9a-f]{8} by system/);
      assert.ok((await why.locator('.checks li.held').count()) >= 2, 'the tests that held are listed');
      await detail.getByTestId('block-device').click();
      await detail
        .getByTestId('remediation-outcomes')
        .getByText(/Block Device — success/)
        .waitFor({ timeout: 20_000 });
      await shot(page, 'violation-blocked');
      await page.getByTestId('tab-remediation').click();
      await page.locator(`[data-testid="remediation-row"][data-alert-id="${alertId}"]`).first().waitFor({ timeout: 10_000 });
      assert.match(
        (await page.locator(`[data-testid="remediation-row"][data-alert-id="${alertId}"]`).first().textContent()) ?? '',
        /Block Device.*success.*by admin@acme/,
      );
      // The block is listed among the active blocks; Unblock lifts it at the tower.
      const detailText = (await page.locator(`[data-testid="remediation-row"][data-alert-id="${alertId}"]`).first().textContent()) ?? '';
      const blocks = page.getByTestId('blocks');
      const device =
        (await page.locator(`[data-testid="remediation-row"][data-alert-id="${alertId}"] td.mono`).first().textContent()) ?? assert.fail(detailText);
      // The device's own block (it may also have app blocks from automatic remediation).
      const block = blocks.locator(`[data-testid="block"][data-device-id="${device}"]`).filter({ hasText: 'whole device' }).first();
      await block.waitFor({ timeout: 20_000 });
      await shot(page, 'remediation');
      const towerId = (await block.getAttribute('data-tower-id')) ?? assert.fail('a tower');
      await block.getByTestId('lift-block').click();
      await page
        .locator(`[data-testid="remediation-row"]`)
        .filter({ hasText: /Unblock Device.*success/ })
        .first()
        .waitFor({ timeout: 20_000 });
      await blocks
        .locator(`[data-testid="block"][data-device-id="${device}"][data-tower-id="${towerId}"]`)
        .filter({ hasText: 'whole device' })
        .waitFor({ state: 'detached', timeout: 20_000 });
    });
  });

  it('metrics show a live chart, top lists and towers with their locations for a picked range', async () => {
    await withPage(await signIn('analyst@acme'), async (page) => {
      await page.getByTestId('tab-metrics').click();
      await page.getByTestId('series-chart').locator('canvas').waitFor({ timeout: 20_000 });
      await page.getByTestId('tower-table').locator('tbody tr').first().waitFor({ timeout: 20_000 });
      assert.match((await page.getByTestId('tower-table').textContent()) ?? '', /New York City|San Francisco|\d+\.\d+, -?\d+\.\d+/);
      await page.getByTestId('range-15m').click();
      await page.getByTestId('range-15m').and(page.locator('[aria-checked="true"]')).waitFor();
      await page.getByTestId('series-chart').locator('canvas').waitFor();
      await shot(page, 'metrics');
    });
  });

  it('an admin adds a webhook; live violations reach it signed, and its deliveries are listed; analysts do not see outputs', async () => {
    const received: Array<{ signature: string; timestamp: number; body: string }> = [];
    const receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push({
          signature: String(req.headers[SIGNATURE_HEADER]),
          timestamp: Number(req.headers[TIMESTAMP_HEADER]),
          body: Buffer.concat(chunks).toString('utf8'),
        });
        res.end('ok');
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    try {
      await withPage(await signIn('admin@acme'), async (page) => {
        await page.getByTestId('tab-remediation').click();
        const panel = page.getByTestId('outputs');
        await panel.waitFor({ timeout: 10_000 });
        await panel.getByTestId('new-output').click();
        await panel.getByTestId('new-output-name').fill('SOC');
        await panel.getByTestId('new-output-url').fill(`http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`);
        await panel.getByTestId('new-output-severity').selectOption('low');
        await panel.getByTestId('create-output').click();
        const secret = ((await panel.getByTestId('output-secret').locator('code').textContent({ timeout: 10_000 })) ?? '').trim();
        assert.match(secret, /^whsec_/);
        const row = panel.getByTestId('output').filter({ hasText: 'SOC' });
        await row.waitFor();
        assert.ok(((await row.textContent()) ?? '').includes(`…${secret.slice(-4)}`), 'the hint of the secret shown');
        // The simulator's violations: within the window, one per user, app and action.
        const deadline = Date.now() + 60_000;
        while (received.length === 0 && Date.now() < deadline) await page.waitForTimeout(200);
        assert.ok(received.length > 0, 'a notification reached the receiver');
        const first = received[0]!;
        assert.equal(first.signature, signature(secret, first.timestamp, first.body), 'signed with the secret the page showed');
        assert.equal(JSON.parse(first.body).type, 'violation');
        await row.getByTestId('output-deliveries').click();
        await panel.getByTestId('delivery').first().waitFor({ timeout: 20_000 });
        assert.equal(await panel.getByTestId('delivery').first().getAttribute('data-status'), 'delivered');
        await shot(page, 'outputs');
        await row.getByTestId('output-delete').click();
        await row.waitFor({ state: 'detached', timeout: 10_000 });
      });
      await withPage(await signIn('analyst@acme'), async (page) => {
        await page.getByTestId('tab-remediation').click();
        await page.getByTestId('blocks').waitFor({ timeout: 10_000 });
        assert.equal(await page.getByTestId('outputs').count(), 0, 'outputs are for admins');
      });
    } finally {
      receiver.closeAllConnections();
      await new Promise((r) => receiver.close(r));
    }
  });

  it('a discovered device appears and is onboarded to a user', async () => {
    await withPage(await signIn('admin@acme'), async (page) => {
      await page.getByTestId('tab-devices').click();
      // Listed (from earlier reports) or pushed live: the simulator reports new Acme phones every few seconds.
      await page.getByTestId('discovered-row').first().waitFor({ timeout: 90_000 });
      await shot(page, 'devices');
      const id = (await page.getByTestId('discovered-row').first().getAttribute('data-device-id')) ?? assert.fail('a device id');
      // By id: a device reported meanwhile goes on top, and first() would be another one.
      const row = page.locator(`[data-testid="discovered-row"][data-device-id="${id}"]`);
      await row.getByTestId('onboard-user').locator('option').nth(1).waitFor({ state: 'attached', timeout: 10_000 });
      await row.getByTestId('onboard-user').selectOption({ index: 1 });
      await row.getByTestId('onboard').click();
      await page.getByTestId('devices-note').filter({ hasText: id }).waitFor({ timeout: 10_000 });
      await page.locator(`[data-testid="registered"] tr[data-device-id="${id}"]`).waitFor({ timeout: 10_000 });
      assert.equal(await page.locator(`[data-testid="discovered-row"][data-device-id="${id}"]`).count(), 0, 'no longer listed as discovered');
      const device = (await call(await tokenOf(page), 'GET', '/devices?limit=500')).json.devices.find((d: { id: string }) => d.id === id);
      assert.equal(device?.status === 'registered' || device?.status === 'active', true, JSON.stringify(device));
    });
  });

  it('editing a rule changes the verdicts, and the page says so', async () => {
    await withPage(await signIn('admin@acme'), async (page) => {
      const js = jetstream(nc);
      let eventId = 9_100_000_000;
      const token = await tokenOf(page);
      /** The verdict the pipeline gives the brief's event (John, Slack, Upload File) now. */
      const verdictNow = async (): Promise<string> => {
        const id = ++eventId;
        // bytes_up marks the event: the usage log has no event ids.
        const marker = 700_000 + (id % 100_000);
        await publishFrame(js, 'att', BRIEF.nycTower, [briefEvent(id, { ts: Date.now(), bytes_up: marker })]);
        let verdict = '';
        await until(`the verdict of event ${id}`, 20_000, async () => {
          const rows = (await call(token, 'GET', `/app-usage?user_id=${BRIEF.john}&range=15m&limit=500`)).json.app_usage as
            Array<{ bytes_up: number; verdict: string; device_id: string }> | undefined;
          verdict = rows?.find((r) => r.bytes_up === marker && r.device_id === BRIEF.johnDevice)?.verdict ?? '';
          return verdict !== '';
        });
        return verdict;
      };
      assert.equal(await verdictNow(), 'deny', 'the brief: Admin Policy denies John uploading with Slack');
      await page.getByTestId('tab-policies').click();
      const rule = page.locator(
        `[data-testid="policy"][data-policy-id="${BRIEF.adminPolicy}"] [data-testid="rule"][data-app-id="${BRIEF.slack}"][data-action-id="${BRIEF.uploadFile}"]`,
      );
      await rule.waitFor({ timeout: 10_000 });
      await rule.getByTestId('edit-rule').click();
      await rule.getByTestId('edit-permission').selectOption('allow');
      // Before saving: what the edit would have done to the last 24 h of stored events.
      await rule.getByTestId('preview-rule').click();
      await rule
        .getByTestId('preview-result')
        .filter({ hasText: /^Over the last 24 h, \d+ events replayed: \d+ would be denied, \d+ allowed/ })
        .waitFor({ timeout: 30_000 });
      await rule.getByTestId('save-rule').click();
      await page.getByTestId('policy-saved').filter({ hasText: 'The pipeline enforces it within a few seconds' }).waitFor({ timeout: 10_000 });
      await shot(page, 'policies');
      await until('the pipeline to allow it', 30_000, async () => (await verdictNow()) === 'allow');
      // The change is in the policy's history, by this admin; restoring the version before it is one more change.
      const history = page.locator(`[data-testid="policy"][data-policy-id="${BRIEF.adminPolicy}"] [data-testid="policy-history"]`);
      await history.getByTestId('show-history').click();
      await history.getByTestId('version').filter({ hasText: 'by admin@acme' }).first().waitFor({ timeout: 20_000 });
      await history.getByTestId('restore-version').first().click();
      await until('the rule denied again', 30_000, async () => (await verdictNow()) === 'deny');
    });
  });

  it('a new policy and rule: preview, shadow results, enforce, the cells it changed in history, then delete both', async () => {
    await withPage(await signIn('admin@acme'), async (page) => {
      const token = await tokenOf(page);
      await page.getByTestId('tab-policies').click();
      await page.getByTestId('new-policy').click();
      await page.getByTestId('new-policy-name').fill('Browser test policy');
      await page.getByTestId(`new-policy-role-${BRIEF.adminRole}`).check();
      await page.getByTestId('create-policy').click();
      await page.getByTestId('policy-saved').filter({ hasText: 'Policy Browser test policy created' }).waitFor({ timeout: 10_000 });
      const panel = page.locator('[data-testid="policy"]').filter({ hasText: 'Browser test policy' });
      await panel.waitFor({ timeout: 10_000 });

      // Any Slack use by the admin role, denied: first in shadow mode, previewed as if enforced.
      await panel.getByTestId('add-rule').click();
      await panel.getByTestId('new-rule-app').selectOption(`app:${BRIEF.slack}`);
      await panel.getByTestId('new-rule-mode').selectOption('shadow');
      await panel.getByTestId('preview-new-rule').click();
      await panel
        .getByTestId('new-rule-preview')
        .filter({ hasText: /^If enforced: Over the last 24 h, \d+ events replayed: \d+ would be denied/ })
        .waitFor({ timeout: 30_000 });
      await panel.getByTestId('save-new-rule').click();
      const rule = panel.getByTestId('rule').filter({ hasText: 'shadow' });
      await rule.waitFor({ timeout: 10_000 });
      await panel.getByTestId('show-shadow').click();
      await panel
        .getByTestId('shadow-summary')
        .filter({ hasText: /^Shadow mode, last 24 h: \d+ events evaluated/ })
        .waitFor({ timeout: 10_000 });

      // Enforced, it is a new version whose cells (admin role × Slack) turn allow to deny.
      await rule.getByTestId('promote-rule').click();
      await panel.getByTestId('rule').filter({ hasNotText: 'shadow' }).waitFor({ timeout: 10_000 });
      const history = panel.getByTestId('policy-history');
      await until('the version of the promotion', 20_000, async () => {
        if (!(await history.getByTestId('version').first().isVisible())) await history.getByTestId('show-history').click();
        else {
          await history.getByTestId('show-history').click();
          await history.getByTestId('show-history').click();
        }
        await page.waitForTimeout(300);
        await history.getByTestId('show-diff').first().click();
        return (await history.getByTestId('diff-cell').filter({ hasText: 'Slack' }).count()) > 0;
      });
      await shot(page, 'policy-history');

      await panel.getByTestId('delete-rule').click();
      await panel.getByTestId('confirm-delete-rule').click();
      await panel.getByTestId('rule').waitFor({ state: 'detached', timeout: 10_000 });
      await panel.getByTestId('delete-policy').click();
      await panel.getByTestId('confirm-delete-policy').click();
      await panel.waitFor({ state: 'detached', timeout: 10_000 });
      const left = (await call(token, 'GET', '/policies?limit=100')).json.policies as Array<{ name: string }>;
      assert.ok(!left.some((p) => p.name === 'Browser test policy'), 'deleted through the api too');
    });
  });

  it('Create again after a step failed finishes the same policy: one policy, every role picked', async () => {
    await withPage(await signIn('admin@acme'), async (page) => {
      const token = await tokenOf(page);
      // The connection drops as the page assigns the first role: the policy exists, unassigned.
      let assigns = 0;
      await page.route('**/roles/policies/assign', (route) => (assigns++ === 0 ? route.abort('connectionreset') : route.continue()));
      await page.getByTestId('tab-policies').click();
      await page.getByTestId('new-policy').click();
      await page.getByTestId('new-policy-name').fill('Retried policy');
      await page.getByTestId(`new-policy-role-${BRIEF.adminRole}`).check();
      await page.getByTestId(`new-policy-role-${BRIEF.contractorRole}`).check();
      await page.getByTestId('create-policy').click();
      await page.getByTestId('new-policy-form').getByRole('alert').filter({ hasText: 'Cannot reach towerwatch' }).waitFor({ timeout: 10_000 });
      await page.getByTestId('create-policy').click();
      await page.getByTestId('policy-saved').filter({ hasText: 'Policy Retried policy created' }).waitFor({ timeout: 10_000 });
      const named = ((await call(token, 'GET', '/policies?limit=500')).json.policies as Array<{ policy_id: string; name: string; role_ids: string[] }>).filter(
        (p) => p.name === 'Retried policy',
      );
      assert.equal(named.length, 1, JSON.stringify(named));
      assert.deepEqual([...named[0]!.role_ids].sort(), [BRIEF.adminRole, BRIEF.contractorRole].sort());
      assert.equal(assigns, 3, 'the dropped assignment, then both');
      assert.equal((await call(token, 'DELETE', `/policies/${named[0]!.policy_id}`)).status, 204);
    });
  });

  it('signing out ends the session: the page shows the sign-in form and the token is refused', async () => {
    await withPage(await signIn('admin@acme'), async (page) => {
      const token = await tokenOf(page);
      assert.equal((await call(token, 'GET', '/me')).status, 200);
      await page.getByTestId('sign-out').click();
      await page.getByTestId('login-form').waitFor();
      await until('the session revoked', 5000, async () => (await call(token, 'GET', '/me')).status === 401);
      await page.getByLabel('Username').fill('admin@acme');
      await page.getByLabel('Password').fill('wrong password');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByTestId('login-error').waitFor();
      await shot(page, 'login');
    });
  });

  it('a viewer sees no block, edit or onboard controls, and the api refuses them anyway', async () => {
    await withPage(await signIn('viewer@acme'), async (page) => {
      await page.getByTestId('alert-row').first().waitFor({ timeout: 60_000 });
      await page.getByTestId('pause').click();
      await page.getByTestId('alert-row').first().click();
      await page.getByTestId('alert-detail').getByText('Blocking needs an enterprise admin.').waitFor();
      assert.equal(await page.getByTestId('block-device').count(), 0);
      assert.equal(await page.getByTestId('block-app').count(), 0);
      await page.getByTestId('tab-policies').click();
      await page.getByTestId('rule').first().waitFor({ timeout: 10_000 });
      assert.equal(await page.getByTestId('edit-rule').count(), 0);
      await page.getByTestId('tab-devices').click();
      await page.getByTestId('registered').waitFor({ timeout: 10_000 });
      assert.equal(await page.getByTestId('onboard').count(), 0);
      const token = await tokenOf(page);
      const alertId = (await call(token, 'GET', '/dashboard/alerts?limit=1')).json.alerts[0].alert_id as string;
      assert.equal((await call(token, 'POST', '/remedial-actions', { alert_id: alertId, action: 'block_device' })).status, 403);
      assert.equal(
        (await call(token, 'POST', '/policy-rules', { policy_id: BRIEF.adminPolicy, app_id: BRIEF.slack, action_id: BRIEF.uploadFile, permission: 'allow' }))
          .status,
        403,
      );
    });
  });

  it('a carrier operator switches enterprise', async () => {
    await withPage(await signIn('ops@carrier'), async (page) => {
      const select = page.getByTestId('enterprise');
      const options = await page.evaluate<string[]>("[...document.querySelectorAll('[data-testid=enterprise] option')].map((o) => o.value)");
      assert.ok(options.includes(BRIEF.acme) && options.length > 1, options.join(','));
      const other = options.find((o) => o !== (BRIEF.acme as string)) ?? assert.fail('another enterprise');
      await select.selectOption(BRIEF.acme);
      await page.getByTestId('live-state').filter({ hasText: 'Live' }).waitFor({ timeout: 20_000 });
      await select.selectOption(other);
      await page.getByTestId('live-state').filter({ hasText: 'Live' }).waitFor({ timeout: 20_000 });
      await page.getByTestId('tab-devices').click();
      await page.getByTestId('registered').waitFor({ timeout: 10_000 });
      assert.equal(await page.getByTestId('onboard').count(), 0, 'carrier operators read only');
    });
  });

  it('works on a narrow screen', async () => {
    await withPage(await signIn('admin@acme', { width: 390, height: 844 }), async (page) => {
      await page.getByTestId('alert-row').first().waitFor({ timeout: 60_000 });
      const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - window.innerWidth');
      assert.ok(overflow <= 1, `the page is ${overflow}px wider than the screen`);
      await shot(page, 'narrow');
    });
  });

  it('a dropped live connection shows Reconnecting…, then Live again, and the feed carries on', async () => {
    // The page's socket runs through the browser's WebSocket routing, forwarded to the real api;
    // "down" refuses new connections the way a restarting api would.
    let down = false;
    const sockets: WebSocketRoute[] = [];
    await withPage(
      await signIn('analyst@acme', undefined, (context) =>
        context.routeWebSocket(/\/ws\/alerts/, (ws) => {
          if (down) return ws.close({ code: 1013, reason: 'try again later' });
          sockets.push(ws);
          ws.connectToServer();
        }),
      ),
      async (page) => {
        const state = page.getByTestId('live-state');
        await page.getByTestId('alert-row').first().waitFor({ timeout: 60_000 });
        down = true;
        await (sockets.at(-1) ?? assert.fail('a routed socket')).close({ code: 1001, reason: 'going away' });
        await state.filter({ hasText: /^Reconnecting…$/ }).waitFor({ timeout: 5_000 });
        assert.match((await state.getAttribute('title')) ?? '', /going away|try again later/, 'says why');
        await shot(page, 'reconnecting');
        const during = await received(page);
        await page.waitForTimeout(1_500);
        assert.equal(await state.textContent(), 'Reconnecting…', 'still retrying while refused');
        assert.equal(await received(page), during, 'nothing arrives while the connection is down');

        down = false;
        await state.filter({ hasText: /^Live$/ }).waitFor({ timeout: 20_000 });
        assert.ok(sockets.length >= 2, 'a new connection was made');
        await until('the feed to grow again', 30_000, async () => (await received(page)) > during);
      },
    );
  });

  it('the feed keeps up with 1,000 alerts/s (frames and main-thread time reported)', async () => {
    await withPage(await signIn('viewer@acme'), async (page) => {
      await page.getByTestId('feed').waitFor();
      await page.evaluate(`(() => {
        const perf = (window.__perf = { frames: [], longTasks: [] });
        new PerformanceObserver((list) => { for (const e of list.getEntries()) perf.longTasks.push(e.duration); }).observe({ type: 'longtask' });
        let last = performance.now();
        const tick = (t) => { perf.frames.push(t - last); last = t; requestAnimationFrame(tick); };
        requestAnimationFrame(tick);
      })()`);
      const before = await received(page);
      const seconds = 5;
      const perTick = 100;
      const started = Date.now();
      for (let tick = 0; tick < seconds * 10; tick++) {
        const alerts: Alert[] = Array.from({ length: perTick }, (_, i) => syntheticAlert(tick * perTick + i));
        nc.publish(alertsSubject(BRIEF.acme), encodeAlerts(alerts));
        const due = started + (tick + 1) * 100;
        await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now())));
      }
      const sent = seconds * 10 * perTick;
      await until('every alert in the page', 20_000, async () => (await received(page)) - before >= sent);
      const perf = await page.evaluate<{ frames: number[]; longTasks: number[] }>('window.__perf');
      const frames = perf.frames.slice(1);
      const budget = 1000 / 60;
      const report = {
        alerts_sent: sent,
        alerts_received: (await received(page)) - before,
        rate_per_second: Math.round(sent / ((Date.now() - started) / 1000)),
        frames: frames.length,
        frames_over_50ms: frames.filter((f) => f > 50).length,
        dropped_frames: frames.reduce((s, f) => s + Math.max(0, Math.round(f / budget) - 1), 0),
        max_frame_ms: Math.round(Math.max(...frames)),
        long_tasks: perf.longTasks.length,
        long_task_ms: Math.round(perf.longTasks.reduce((s, x) => s + x, 0)),
        rows_shown: await page.getByTestId('alert-row').count(),
        measured_at: new Date().toISOString(),
      };
      writeFileSync(join(RESULTS, 'feed-1000-alerts-per-second.json'), `${JSON.stringify(report, null, 2)}\n`);
      process.stdout.write(`dashboard feed at ${report.rate_per_second} alerts/s: ${JSON.stringify(report)}\n`);
      // The simulator's own alerts arrive meanwhile too: at least every synthetic one, and the last one drawn.
      assert.ok(report.alerts_received >= sent, `${report.alerts_received} of ${sent} alerts reached the page`);
      await page.locator(`[data-testid="alert-row"][data-alert-id="load:tower123:${sent - 1}"]`).waitFor({ timeout: 5000 });
      assert.ok(report.rows_shown > 0 && report.rows_shown <= 200, `rows drawn: ${report.rows_shown}`);
    });
  });

  it('renews the session without the user noticing: a page open past its first token stays live', async () => {
    const left = watcherSince + (ACCESS_TTL_SECONDS + 5) * 1000 - Date.now();
    if (left > 0) await new Promise((r) => setTimeout(r, left));
    assert.equal((await call(watcherFirstToken, 'GET', '/me')).status, 401, 'the first token has expired');
    assert.notEqual(await tokenOf(watcher), watcherFirstToken, 'renewed');
    assert.equal(await watcher.getByTestId('live-state').textContent(), 'Live');
    assert.equal(await watcher.getByTestId('login-form').count(), 0, 'never sent back to sign in');
    // The socket carries on under the renewed session, and calls still work.
    const at = await received(watcher);
    await until('alerts on the renewed socket', 30_000, async () => (await received(watcher)) > at);
    await watcher.getByTestId('tab-remediation').click();
    await watcher.getByTestId('remediation-log').waitFor({ timeout: 10_000 });
  });
});

function syntheticAlert(i: number): Alert {
  return briefAlert(`load:tower123:${i}`, { severity: ['low', 'medium', 'high', 'critical'][i % 4] as string, policy_version: 'load' });
}

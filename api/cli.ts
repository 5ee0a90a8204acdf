/**
 * `towerwatch api` (the REST api and /ws/alerts on their own, for deployments with a
 * ClickHouse server) and `towerwatch accounts create|list|delete` (console accounts).
 */
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { fail, loadConfigOrExit, natsUrlOrExit } from '../core/cliSupport.js';
import { processLog } from '../core/log.js';
import { ClickHouseOpenError, migrate, openClickHouse } from '../core/clickhouse/index.js';
import { ControlPlaneStore, ControlPlaneView, ConflictError, CARRIER_SCOPE } from '../core/controlPlane/index.js';
import { ACCOUNT_ROLES, type Account, type AccountRole } from '../core/domain.js';
import { connectNats } from '../core/nats/index.js';
import { hashPassword, MIN_PASSWORD_LENGTH } from '../core/passwords.js';
import { apiOptionsFrom, startApiServer } from './server.js';

export function registerApiCommands(program: Command): void {
  program
    .command('api')
    .description('Serve the REST api and the /ws/alerts socket (with the embedded engine, `towerwatch up` runs it instead)')
    .action(async () => {
      const config = loadConfigOrExit();
      const log = processLog(config);
      const url = natsUrlOrExit(config);
      const nc = await connectNats(url, 'towerwatch api').catch((err: unknown) => fail((err as Error).message));
      const clickhouse = await openClickHouse({ clickhouseUrl: config.clickhouseUrl, dataDir: config.dataDir, cluster: config.clickhouseCluster }).catch(
        (err: unknown) => fail(err instanceof ClickHouseOpenError ? err.message : String(err)),
      );
      await migrate(clickhouse, { retentionDays: config.retentionDays });
      const api = await startApiServer({
        nc,
        clickhouse,
        ...apiOptionsFrom(config),
        log,
      }).catch((err: unknown) => fail((err as Error).message));
      log(`api: listening on ${api.url} (REST, /ws/alerts, /openapi.json)`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      log('api: stopping');
      await api.close();
      await clickhouse.close();
      await nc.drain();
    });

  const accounts = program.command('accounts').description('Console accounts (who may sign in to the api and the dashboard)');
  accounts
    .command('create')
    .description('Create a console account; the password is read from stdin (or asked for in a terminal)')
    .requiredOption('--username <name>', 'sign-in name, e.g. alice@acme')
    .requiredOption('--role <role>', `one of ${ACCOUNT_ROLES.join(', ')}`)
    .option('--enterprise <id>', 'the enterprise of an enterprise account')
    .option('--carrier <id>', 'the carrier of a carrier_operator')
    .option('--name <display name>', 'shown in the dashboard')
    .action(async (opts: { username: string; role: string; enterprise?: string; carrier?: string; name?: string }) => {
      if (!(ACCOUNT_ROLES as readonly string[]).includes(opts.role)) fail(`--role must be one of ${ACCOUNT_ROLES.join(', ')}, got '${opts.role}'`);
      const role = opts.role as AccountRole;
      if (
        role === 'carrier_operator' ? opts.carrier === undefined || opts.enterprise !== undefined : opts.enterprise === undefined || opts.carrier !== undefined
      ) {
        fail(role === 'carrier_operator' ? 'a carrier_operator needs --carrier (and no --enterprise)' : `a ${role} needs --enterprise (and no --carrier)`);
      }
      await withControlPlane(async (store, view) => {
        if (opts.enterprise !== undefined && view.enterprise(opts.enterprise) === undefined) fail(`no enterprise '${opts.enterprise}' in the control plane`);
        if (opts.carrier !== undefined && view.carrier(opts.carrier) === undefined) fail(`no carrier '${opts.carrier}' in the control plane`);
        const password = await readPassword();
        if (password.length < MIN_PASSWORD_LENGTH) fail(`the password needs at least ${MIN_PASSWORD_LENGTH} characters`);
        const account: Account = {
          username: opts.username,
          display_name: opts.name ?? opts.username,
          role,
          enterprise_id: opts.enterprise ?? null,
          carrier_id: opts.carrier ?? null,
          password_hash: await hashPassword(password),
          created_at: new Date().toISOString(),
        };
        try {
          await store.create('account', account);
        } catch (err) {
          if (err instanceof ConflictError) fail(`account '${opts.username}' exists already`);
          throw err;
        }
        process.stdout.write(`created ${role} ${opts.username}${opts.enterprise ? ` of ${opts.enterprise}` : ` of carrier ${opts.carrier}`}\n`);
      });
    });
  accounts
    .command('list')
    .description('List console accounts (never their password hashes)')
    .action(async () => {
      await withControlPlane(async (_store, view) => {
        for (const a of view.list('account', undefined).sort((x, y) => x.username.localeCompare(y.username))) {
          process.stdout.write(`${a.username}\t${a.role}\t${a.enterprise_id ?? `carrier:${a.carrier_id}`}\t${a.display_name}\n`);
        }
      });
    });
  accounts
    .command('delete <username>')
    .description('Delete a console account (its tokens stop working at once)')
    .action(async (username: string) => {
      await withControlPlane(async (store, view) => {
        const a = view.account(username);
        if (a === undefined) fail(`no account '${username}'`);
        await store.delete('account', a.enterprise_id ?? CARRIER_SCOPE, username);
        process.stdout.write(`deleted ${username}\n`);
      });
    });
}

async function withControlPlane(fn: (store: ControlPlaneStore, view: ControlPlaneView) => Promise<void>): Promise<void> {
  const config = loadConfigOrExit();
  const url = natsUrlOrExit(config);
  const nc = await connectNats(url, 'towerwatch accounts').catch((err: unknown) =>
    fail(`${(err as Error).message}\n  start the system (towerwatch up) or point NATS_URL at it`),
  );
  try {
    const store = await ControlPlaneStore.open(nc);
    const view = await ControlPlaneView.open(nc);
    try {
      await fn(store, view);
    } finally {
      await view.close();
    }
  } finally {
    await nc.drain();
  }
}

/** The first line of stdin; in a terminal, asked for without echo. */
async function readPassword(): Promise<string> {
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY === true });
  if (process.stdin.isTTY) {
    process.stdout.write('password: ');
    // Echo nothing of what is typed.
    (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput = () => undefined;
  }
  try {
    const line = await new Promise<string>((resolve) => {
      rl.once('line', resolve);
      rl.once('close', () => resolve(''));
    });
    if (process.stdin.isTTY) process.stdout.write('\n');
    return line;
  } finally {
    rl.close();
  }
}

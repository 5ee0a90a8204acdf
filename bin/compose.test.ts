/**
 * docker-compose.yml and the Dockerfile, checked as far as a machine without a Docker engine
 * can: every towerwatch service's environment goes through the real config loader and its
 * command through the real CLI; every dependency waits for a healthy (or finished) service;
 * the NATS servers advertise their own addresses and run the version tested here; the
 * ClickHouse servers form the cluster that TOWERWATCH_CLICKHOUSE_CLUSTER names, with Keeper,
 * the credentials of CLICKHOUSE_URL and the engine version of chdb.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { loadConfig } from '../core/config.js';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '..', '..');
const CLI = join(ROOT, 'dist', 'bin', 'towerwatch.js');

interface Service {
  image?: string;
  build?: unknown;
  command?: string[];
  environment?: Record<string, string | number>;
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test?: string[]; disable?: boolean };
  hostname?: string;
  restart?: string;
  configs?: Array<{ source: string; target: string }>;
}
interface Compose {
  services: Record<string, Service>;
  configs: Record<string, { content: string }>;
}

/** `${VAR:-default}` as Compose fills it in with VAR unset. */
const interpolate = (value: string): string => value.replace(/\$\{(\w+)(?::?-([^}]*))?\}/g, (_, _name: string, dflt?: string) => dflt ?? '');

const compose = parse(await readFile(join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as Compose;
const services = Object.entries(compose.services);
const towerwatch = services.filter(([, s]) => s.image === 'towerwatch:local');
const envOf = (s: Service): Record<string, string> => Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, interpolate(String(v))]));
const xmlText = (xml: string, tag: string): string[] => [...xml.matchAll(new RegExp(`<${tag}>([^<]*)</${tag}>`, 'g'))].map((m) => m[1] ?? '');

test('the towerwatch services: seed once, 2 pipelines, 2 api nodes and the simulator, each environment valid for the config loader', async () => {
  assert.deepEqual(towerwatch.map(([name]) => name).sort(), ['api-1', 'api-2', 'pipeline', 'seed', 'simulator']);
  for (const [name, s] of towerwatch) {
    assert.equal(s.build, '.', `${name} is built from the project's Dockerfile`);
    const config = loadConfig(envOf(s), { cwd: '/app' });
    assert.equal(config.natsReplicas, 3, name);
    assert.equal(config.clickhouseCluster, 'towerwatch', name);
    const natsHosts = (config.natsUrl ?? '').split(',').map((u) => new URL(u).hostname);
    assert.deepEqual(natsHosts, ['nats-1', 'nats-2', 'nats-3'], name);
    const ch = new URL(config.clickhouseUrl ?? assert.fail(`${name}: CLICKHOUSE_URL`));
    assert.ok(compose.services[ch.hostname], `${name}: ClickHouse host ${ch.hostname} is a service`);
    assert.equal(ch.pathname, '/towerwatch');
  }
  for (const name of ['api-1', 'api-2']) assert.equal(loadConfig(envOf(compose.services[name]!)).apiHost, '0.0.0.0');
  assert.equal((compose.services['pipeline'] as { deploy?: { replicas?: number } }).deploy?.replicas, 2);
  assert.equal(compose.services['seed']?.restart, 'no');
  assert.ok(compose.services['simulator']?.command?.includes('--skip-seed'), 'the simulator does not seed again on a restart');
});

test('each towerwatch command is one the CLI takes', async () => {
  const commands = new Set(towerwatch.map(([, s]) => JSON.stringify(s.command)));
  for (const c of commands) {
    const args = JSON.parse(c) as string[];
    // --help after the options: commander parses the command path, then prints its help.
    const { stdout } = await run(process.execPath, [CLI, ...args, '--help']);
    assert.match(stdout, /^Usage: towerwatch /, args.join(' '));
  }
  const dockerfile = await readFile(join(ROOT, 'Dockerfile'), 'utf8');
  const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> };
  assert.ok(dockerfile.includes(`ENTRYPOINT ["node", "${pkg.bin['towerwatch']}"]`), 'the image runs the towerwatch executable');
  assert.equal(dockerfile.match(/^FROM node:20-bookworm/gm)?.length, 2, 'a build stage and a runtime stage on Node 20');
  assert.match(dockerfile, /COPY package\.json package-lock\.json \.\/\n(?:#.*\n)*RUN npm install/, 'dependencies from the lock file');
});

test('every service has a healthcheck, and every dependency waits for health (or for the seed to finish)', () => {
  const oneShot = new Set(['seed', 'simulator']); // nothing depends on their health
  for (const [name, s] of services) {
    if (oneShot.has(name)) assert.equal(s.healthcheck?.disable, true, name);
    else assert.ok((s.healthcheck?.test?.length ?? 0) > 1, `${name} has a healthcheck`);
    for (const [dep, { condition }] of Object.entries(s.depends_on ?? {})) {
      assert.ok(compose.services[dep], `${name} depends on ${dep}, a service`);
      assert.equal(condition, dep === 'seed' ? 'service_completed_successfully' : 'service_healthy', `${name} → ${dep}`);
    }
  }
  for (const [name] of towerwatch) {
    const deps = Object.keys(compose.services[name]?.depends_on ?? {});
    for (const needed of ['nats-1', 'nats-2', 'nats-3', 'clickhouse-1', 'clickhouse-2']) assert.ok(deps.includes(needed), `${name} waits for ${needed}`);
  }
});

test('three NATS servers of the version tested here, each advertising its own address to clients and routes', async () => {
  const { stdout } = await run('nats-server', ['--version']);
  const version = /v(\d+\.\d+\.\d+)/.exec(stdout)?.[1] ?? assert.fail(stdout);
  const nats = services.filter(([name]) => name.startsWith('nats-'));
  assert.equal(nats.length, 3);
  for (const [name, s] of nats) {
    assert.equal(s.image, `nats:${version}-alpine`, name);
    const arg = (flag: string): string | undefined => s.command?.[s.command.indexOf(flag) + 1];
    assert.ok(s.command?.includes('-js'), name);
    assert.equal(arg('--client_advertise'), `${name}:4222`);
    assert.equal(arg('--cluster_advertise'), `${name}:6222`);
    assert.deepEqual(
      arg('--routes')
        ?.split(',')
        .map((r) => new URL(r).hostname)
        .sort(),
      nats.map(([n]) => n).filter((n) => n !== name),
    );
  }
});

test('ClickHouse: Keeper and two replicas of the cluster TOWERWATCH_CLICKHOUSE_CLUSTER names, on the engine version of chdb, with the credentials of CLICKHOUSE_URL', async () => {
  const { query } = await import('chdb');
  const [major, minor] = query('SELECT version()', 'TSV').trim().split('.');
  const servers = services.filter(([name]) => /^clickhouse-\d+$/.test(name));
  assert.equal(servers.length, 2);
  const url = new URL(envOf(compose.services['pipeline']!)['CLICKHOUSE_URL'] ?? '');
  const clusterName = envOf(compose.services['pipeline']!)['TOWERWATCH_CLICKHOUSE_CLUSTER'] ?? '';
  const xml = compose.configs['clickhouse-cluster']?.content ?? assert.fail('the cluster config');
  const cluster =
    new RegExp(`<remote_servers>\\s*<${clusterName}>([^]*?)</${clusterName}>`).exec(xml)?.[1] ?? assert.fail(`cluster ${clusterName} in remote_servers`);
  assert.deepEqual(xmlText(cluster, 'host').sort(), servers.map(([n]) => n).sort(), 'the replicas are the ClickHouse services');
  assert.equal(xmlText(cluster, 'internal_replication')[0], 'true', 'a Distributed insert writes one replica; replication copies it');
  assert.match(cluster, /<user from_env="CLICKHOUSE_USER"\/><password from_env="CLICKHOUSE_PASSWORD"\/>/);
  assert.match(xml, /<macros>\s*<shard>1<\/shard>\s*<replica from_env="CLICKHOUSE_REPLICA"\/>/);
  assert.match(xml, /<distributed_ddl>/);
  const keeperHost = xmlText(/<zookeeper>([^]*?)<\/zookeeper>/.exec(xml)?.[1] ?? '', 'host');
  assert.deepEqual(keeperHost, ['clickhouse-keeper']);
  assert.match(compose.configs['clickhouse-keeper']?.content ?? '', /<hostname>clickhouse-keeper<\/hostname>/);
  assert.ok(compose.services['clickhouse-keeper']?.image?.endsWith(`:${major}.${minor}`));

  const replicas = new Set<string>();
  for (const [name, s] of servers) {
    assert.equal(s.image, `clickhouse/clickhouse-server:${major}.${minor}`, `${name}: the engine version of chdb`);
    assert.equal(s.hostname, name);
    const env = envOf(s);
    assert.equal(env['CLICKHOUSE_REPLICA'], name);
    replicas.add(env['CLICKHOUSE_REPLICA'] ?? '');
    assert.equal(env['CLICKHOUSE_USER'], decodeURIComponent(url.username), `${name}: the user of CLICKHOUSE_URL`);
    assert.equal(env['CLICKHOUSE_PASSWORD'], decodeURIComponent(url.password), `${name}: the password of CLICKHOUSE_URL`);
    assert.equal(env['CLICKHOUSE_DB'], url.pathname.slice(1), `${name}: the database exists on every replica before ON CLUSTER DDL`);
    assert.ok(s.configs?.some((c) => c.source === 'clickhouse-cluster'));
    assert.ok(s.depends_on?.['clickhouse-keeper'], `${name} waits for Keeper`);
  }
  assert.equal(replicas.size, servers.length, 'each replica has its own name');
});

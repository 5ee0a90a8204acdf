import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { test } from 'node:test';
import { CONFIG_VARIABLES, ConfigError, configVariablesMarkdown, loadConfig, natsUrlOf } from './config.js';

test('defaults when nothing is set', () => {
  const cfg = loadConfig({}, { cwd: '/srv/app' });
  assert.deepEqual(cfg, {
    natsUrl: null,
    natsPort: 4222,
    clickhouseUrl: null,
    clickhouseCluster: null,
    dataDir: '/srv/app/.towerwatch',
    apiPort: 8080,
    apiHost: '127.0.0.1',
    jwtSecret: null,
    rateLimitPerMinute: 100,
    accessTtlSeconds: 900,
    blockProofGraceSeconds: 60,
    blockSweepSeconds: 30,
    memoryTrimSeconds: 2,
    retentionDays: 30,
    logLevel: 'info',
    logFormat: 'auto',
    demoPassword: 'towerwatch-demo',
    maxDeliver: 5,
    natsRetrySeconds: 30,
    natsReplicas: 1,
    pipelinePort: 9464,
    pipelineHost: '127.0.0.1',
    metricsToken: null,
  });
  assert.ok(Object.isFrozen(cfg));
});

test('data dir resolves to an absolute path against process.cwd() by default', () => {
  const cfg = loadConfig({ TOWERWATCH_DATA_DIR: 'state' });
  assert.ok(isAbsolute(cfg.dataDir));
  assert.equal(cfg.dataDir, join(process.cwd(), 'state'));
});

test('valid values are parsed; blank counts as unset', () => {
  const cfg = loadConfig({
    NATS_URL: 'nats://a:4222, tls://b:4223,c:4224',
    TOWERWATCH_NATS_PORT: ' 14222 ',
    CLICKHOUSE_URL: 'https://ch.example:8443',
    TOWERWATCH_DATA_DIR: '/var/lib/tw',
    TOWERWATCH_API_PORT: '',
    TOWERWATCH_RETENTION_DAYS: '7',
    TOWERWATCH_LOG_LEVEL: 'DEBUG',
    TOWERWATCH_LOG_FORMAT: 'JSON',
    TOWERWATCH_DEMO_PASSWORD: 's3cret',
  });
  assert.equal(cfg.natsUrl, 'nats://a:4222,tls://b:4223,c:4224');
  assert.equal(cfg.natsPort, 14222);
  assert.equal(cfg.clickhouseUrl, 'https://ch.example:8443');
  assert.equal(cfg.dataDir, '/var/lib/tw');
  assert.equal(cfg.apiPort, 8080);
  assert.equal(cfg.retentionDays, 7);
  assert.equal(cfg.logLevel, 'debug');
  assert.equal(cfg.logFormat, 'json');
  assert.equal(cfg.demoPassword, 's3cret');
});

test('each offending variable is named with what it expects and what it got', () => {
  const err = (() => {
    try {
      loadConfig({
        NATS_URL: 'http://wrong:80',
        TOWERWATCH_NATS_PORT: 'abc',
        CLICKHOUSE_URL: 'clickhouse',
        TOWERWATCH_API_PORT: '70000',
        TOWERWATCH_RETENTION_DAYS: '1.5',
        TOWERWATCH_LOG_LEVEL: 'loud',
      });
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  assert.ok(err instanceof ConfigError);
  assert.equal(err.name, 'ConfigError');
  assert.equal(err.code, 'invalid_config');
  assert.deepEqual(
    err.issues.map((i) => i.variable),
    ['NATS_URL', 'TOWERWATCH_NATS_PORT', 'CLICKHOUSE_URL', 'TOWERWATCH_API_PORT', 'TOWERWATCH_RETENTION_DAYS', 'TOWERWATCH_LOG_LEVEL'],
  );
  assert.match(err.message, /TOWERWATCH_NATS_PORT must be an integer 0–65535, got 'abc'/);
  assert.match(err.message, /TOWERWATCH_API_PORT must be an integer 0–65535, got '70000'/);
  assert.match(err.message, /NATS_URL must be a NATS URL .* got 'http:\/\/wrong:80'/);
  assert.match(err.message, /CLICKHOUSE_URL must be an http:\/\/ or https:\/\/ URL, got 'clickhouse'/);
  assert.match(err.message, /TOWERWATCH_RETENTION_DAYS must be an integer 1–3650, got '1.5'/);
  assert.match(err.message, /TOWERWATCH_LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got 'loud'/);
});

test('negative and too large ports are rejected; 0 (any free port) is accepted', () => {
  assert.throws(() => loadConfig({ TOWERWATCH_API_PORT: '-1' }), /TOWERWATCH_API_PORT must be an integer 0–65535, got '-1'/);
  assert.throws(() => loadConfig({ TOWERWATCH_NATS_PORT: '65536' }), /TOWERWATCH_NATS_PORT must be an integer 0–65535, got '65536'/);
  assert.equal(loadConfig({ TOWERWATCH_API_PORT: '0' }).apiPort, 0);
});

test('TOWERWATCH_MAX_DELIVER: an integer 1–100, default 5', () => {
  assert.equal(loadConfig({ TOWERWATCH_MAX_DELIVER: '3' }).maxDeliver, 3);
  for (const bad of ['0', '-1', '101', '2.5', 'many']) {
    assert.throws(() => loadConfig({ TOWERWATCH_MAX_DELIVER: bad }), new RegExp(`TOWERWATCH_MAX_DELIVER must be an integer 1–100, got '${bad}'`));
  }
});

test('TOWERWATCH_NATS_REPLICAS: 1, 3 or 5, default 1', () => {
  assert.equal(loadConfig({}).natsReplicas, 1);
  assert.equal(loadConfig({ TOWERWATCH_NATS_REPLICAS: '3' }).natsReplicas, 3);
  assert.equal(loadConfig({ TOWERWATCH_NATS_REPLICAS: '5' }).natsReplicas, 5);
  for (const bad of ['0', '2', '4', '7', '3.0', 'three']) {
    assert.throws(
      () => loadConfig({ TOWERWATCH_NATS_REPLICAS: bad }),
      new RegExp(`TOWERWATCH_NATS_REPLICAS must be one of 1, 3, 5, got '${bad.replace('.', '\\.')}'`),
    );
  }
});

test('TOWERWATCH_CLICKHOUSE_CLUSTER: a cluster name, only with CLICKHOUSE_URL', () => {
  const url = 'http://ch-1:8123';
  assert.equal(loadConfig({ CLICKHOUSE_URL: url }).clickhouseCluster, null);
  assert.equal(loadConfig({ CLICKHOUSE_URL: url, TOWERWATCH_CLICKHOUSE_CLUSTER: ' towerwatch-eu_1 ' }).clickhouseCluster, 'towerwatch-eu_1');
  assert.throws(() => loadConfig({ TOWERWATCH_CLICKHOUSE_CLUSTER: 'towerwatch' }), /TOWERWATCH_CLICKHOUSE_CLUSTER needs CLICKHOUSE_URL/);
  for (const bad of ["tw'; DROP", '1tw', 'a b', 'tw.x']) {
    assert.throws(() => loadConfig({ CLICKHOUSE_URL: url, TOWERWATCH_CLICKHOUSE_CLUSTER: bad }), /TOWERWATCH_CLICKHOUSE_CLUSTER must be a cluster name/);
  }
});

test('pipeline health port and host; the metrics token is validated but never printed', () => {
  const cfg = loadConfig({ TOWERWATCH_PIPELINE_PORT: '0', TOWERWATCH_PIPELINE_HOST: '0.0.0.0', TOWERWATCH_METRICS_TOKEN: ' s3cret-scrape-token-0123 ' });
  assert.equal(cfg.pipelinePort, 0);
  assert.equal(cfg.pipelineHost, '0.0.0.0');
  assert.equal(cfg.metricsToken, 's3cret-scrape-token-0123');
  assert.throws(() => loadConfig({ TOWERWATCH_PIPELINE_PORT: '65536' }), /TOWERWATCH_PIPELINE_PORT must be an integer 0–65535, got '65536'/);
  for (const bad of ['short-secret', 'has a space in the middle of it']) {
    assert.throws(
      () => loadConfig({ TOWERWATCH_METRICS_TOKEN: bad }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.deepEqual(
          err.issues.map((i) => i.variable),
          ['TOWERWATCH_METRICS_TOKEN'],
        );
        assert.match(err.message, new RegExp(`TOWERWATCH_METRICS_TOKEN must be .* got a value of ${bad.length} characters \\(not shown\\)`));
        assert.ok(!err.message.includes(bad), 'the token is not in the message');
        return true;
      },
    );
  }
});

test('the local NATS address: NATS_URL wins; port 0 without NATS_URL names what to set', () => {
  assert.equal(natsUrlOf(loadConfig({ TOWERWATCH_NATS_PORT: '14222' })), 'nats://127.0.0.1:14222');
  assert.equal(natsUrlOf(loadConfig({ TOWERWATCH_NATS_PORT: '0', NATS_URL: 'nats://10.0.0.5:4222' })), 'nats://10.0.0.5:4222');
  assert.throws(
    () => natsUrlOf(loadConfig({ TOWERWATCH_NATS_PORT: '0' })),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /NATS_URL is unset while TOWERWATCH_NATS_PORT is 0 .*set NATS_URL to the address up printed/);
      return true;
    },
  );
});

test('the variables table covers every config field and renders as Markdown', () => {
  const fields = CONFIG_VARIABLES.map((v) => v.field).sort();
  assert.deepEqual(fields, Object.keys(loadConfig({})).sort());
  const md = configVariablesMarkdown();
  for (const v of CONFIG_VARIABLES) assert.ok(md.includes(`\`${v.name}\``));
});

test('a rejected secret is never printed: JWT secret, metrics token, passwords in NATS and ClickHouse URLs', () => {
  const secrets = ['short-jwt-Zq7', 'tok3n-Xy', 'hunter2-ch', 'hunter2-nats', 'querypw-9'];
  let err: unknown;
  try {
    loadConfig({
      TOWERWATCH_JWT_SECRET: secrets[0],
      TOWERWATCH_METRICS_TOKEN: secrets[1],
      CLICKHOUSE_URL: `ftp://default:${secrets[2]}@ch.example:8123/?password=${secrets[4]}`,
      NATS_URL: `http://user:${secrets[3]}@nats.example:4222`,
    });
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof ConfigError);
  assert.deepEqual(err.issues.map((i) => i.variable).sort(), ['CLICKHOUSE_URL', 'NATS_URL', 'TOWERWATCH_JWT_SECRET', 'TOWERWATCH_METRICS_TOKEN']);
  const everything = `${err.message}\n${JSON.stringify(err.issues)}\n${String(err.stack)}`;
  for (const s of secrets) assert.ok(!everything.includes(s), `'${s}' is printed: ${err.message}`);
  assert.match(err.message, /TOWERWATCH_JWT_SECRET must be a string of at least 32 characters, got a value of 13 characters \(not shown\)/);
  assert.match(
    err.message,
    /TOWERWATCH_METRICS_TOKEN must be a string of at least 16 printable characters without spaces, got a value of 8 characters \(not shown\)/,
  );
  assert.match(err.message, /CLICKHOUSE_URL must be an http:\/\/ or https:\/\/ URL, got 'ftp:\/\/default:\*\*\*@ch\.example:8123\/\?password=\*\*\*'/);
  assert.match(err.message, /NATS_URL must be .* got 'http:\/\/user:\*\*\*@nats\.example:4222'/);
});

test('the metrics token: unset is null; a valid one is kept', () => {
  assert.equal(loadConfig({}).metricsToken, null);
  assert.equal(loadConfig({ TOWERWATCH_METRICS_TOKEN: ' 0123456789abcdef ' }).metricsToken, '0123456789abcdef');
  assert.throws(() => loadConfig({ TOWERWATCH_METRICS_TOKEN: 'has a space in it ok' }), /TOWERWATCH_METRICS_TOKEN must be/);
});

test("README's variables table is the generated one (regenerate it from configVariablesMarkdown())", () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  assert.ok(readme.includes(configVariablesMarkdown()), 'README.md: replace the table under "Configuration" with configVariablesMarkdown()');
});

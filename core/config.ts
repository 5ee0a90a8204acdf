/**
 * Process configuration from environment variables, validated once at start-up into a
 * frozen, fully-resolved {@link Config}. Every variable, its default and its meaning is in
 * {@link CONFIG_VARIABLES}, from which the docs are generated ({@link configVariablesMarkdown}).
 *
 * An empty value (`FOO=`) counts as unset, so a blank line in an env file means "default".
 */
import { resolve } from 'node:path';
import { z } from 'zod';
import { CodedError } from './codedError.js';

/** pino's level names, in order of severity, plus `silent`. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
/** `text`: status lines for people; `json`: pino's JSON lines; `auto`: text on a TTY, else JSON. */
export const LOG_FORMATS = ['auto', 'text', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export interface Config {
  /** NATS server URL(s), comma-separated; `null`: start a local nats-server. */
  readonly natsUrl: string | null;
  /** Client port of the local nats-server (used only when `natsUrl` is null). */
  readonly natsPort: number;
  /** ClickHouse HTTP URL; `null`: embedded chdb in `dataDir`. */
  readonly clickhouseUrl: string | null;
  /** ClickHouse cluster the schema spans (ON CLUSTER, Replicated, Distributed `*_all`); null: one server or embedded. */
  readonly clickhouseCluster: string | null;
  /** Absolute directory for local state (nats-server store, chdb data). */
  readonly dataDir: string;
  readonly apiPort: number;
  /** Address the api binds. */
  readonly apiHost: string;
  /** HMAC secret for access and refresh tokens; `null`: one generated and kept in NATS KV. */
  readonly jwtSecret: string | null;
  /** Requests per minute per console account. */
  readonly rateLimitPerMinute: number;
  /** Lifetime of an access token (the page renews it a minute before). */
  readonly accessTtlSeconds: number;
  readonly retentionDays: number;
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
  readonly demoPassword: string;
  /** How long NATS operations (publishes, requests) are retried through a broker blip. */
  readonly natsRetrySeconds: number;
  readonly blockProofGraceSeconds: number;
  readonly blockSweepSeconds: number;
  /** How often a pipeline process hands its allocator's free pages back (0: never). */
  readonly memoryTrimSeconds: number;
  /** Least replicas of every JetStream stream and KV bucket (never lowered). */
  readonly natsReplicas: NatsReplicas;
  /** Deliveries of a usage message whose processing fails before it is dead-lettered. */
  readonly maxDeliver: number;
  /** Port of the pipeline's /healthz, /readyz and /metrics; 0: a free one. */
  readonly pipelinePort: number;
  /** Address the pipeline's health and metrics server binds. */
  readonly pipelineHost: string;
  /** Bearer token required for /metrics; `null`: /metrics is served to loopback clients only. */
  readonly metricsToken: string | null;
}

export const DEFAULT_NATS_PORT = 4222;
export const DEFAULT_DATA_DIR = './.towerwatch';
export const DEFAULT_API_PORT = 8080;
export const DEFAULT_API_HOST = '127.0.0.1';
export const DEFAULT_RATE_LIMIT_PER_MINUTE = 100;
export const DEFAULT_ACCESS_TTL_SECONDS = 15 * 60;
export const MIN_JWT_SECRET_LENGTH = 32;
export const DEFAULT_RETENTION_DAYS = 30;
export const DEFAULT_LOG_LEVEL: LogLevel = 'info';
export const DEFAULT_LOG_FORMAT: LogFormat = 'auto';
export const DEFAULT_DEMO_PASSWORD = 'towerwatch-demo';
export const MAX_RETENTION_DAYS = 3650;
export const DEFAULT_NATS_RETRY_SECONDS = 30;
export const DEFAULT_BLOCK_PROOF_GRACE_SECONDS = 60;
export const DEFAULT_BLOCK_SWEEP_SECONDS = 30;
export const DEFAULT_MEMORY_TRIM_SECONDS = 2;
/** Replica counts a JetStream cluster runs with: an even count tolerates no more failures than the odd one below it. */
export const NATS_REPLICAS = [1, 3, 5] as const;
export type NatsReplicas = (typeof NATS_REPLICAS)[number];
export const DEFAULT_MAX_DELIVER = 5;
export const MAX_MAX_DELIVER = 100;
/** The port OpenTelemetry's Prometheus exporter uses by default; free of the api's 8080 and NATS. */
export const DEFAULT_PIPELINE_PORT = 9464;
export const DEFAULT_PIPELINE_HOST = '127.0.0.1';
export const MIN_METRICS_TOKEN_LENGTH = 16;
/** A ClickHouse cluster name as towerwatch accepts it (it is written into DDL unquoted-safe). */
export const CLUSTER_NAME = /^[A-Za-z_][\w-]*$/;

export interface ConfigVariable {
  /** Environment variable name. */
  readonly name: string;
  /** Field of {@link Config} it sets. */
  readonly field: keyof Config;
  /** Default as written in docs; `null` when unset has a meaning of its own (see description). */
  readonly default: string | null;
  /** What a valid value looks like (also used in error messages: "NAME must be …"). */
  readonly expected: string;
  readonly description: string;
  /**
   * What an invalid value may show in an error: `secret` values are never printed (only their
   * length), `url` values are printed with any password replaced by `***`. @default plain
   */
  readonly show?: 'plain' | 'secret' | 'url';
}

/** The one table of configuration: docs, validation messages and defaults all come from it. */
export const CONFIG_VARIABLES = [
  {
    name: 'NATS_URL',
    field: 'natsUrl',
    default: null,
    expected: 'a NATS URL such as nats://host:4222 (or a comma-separated list)',
    show: 'url',
    description: 'NATS server(s) with JetStream. Unset: towerwatch starts a local nats-server on TOWERWATCH_NATS_PORT with its store in TOWERWATCH_DATA_DIR.',
  },
  {
    name: 'TOWERWATCH_NATS_PORT',
    field: 'natsPort',
    default: String(DEFAULT_NATS_PORT),
    expected: 'an integer 0–65535',
    description:
      'Client port of the local nats-server that `towerwatch up` starts when NATS_URL is unset; 0 picks a free one (up prints it, other commands then need NATS_URL).',
  },
  {
    name: 'CLICKHOUSE_URL',
    field: 'clickhouseUrl',
    default: null,
    expected: 'an http:// or https:// URL',
    show: 'url',
    description: 'ClickHouse server or cluster over HTTP. Unset: embedded ClickHouse (chdb) with its data in TOWERWATCH_DATA_DIR; one process owns it.',
  },
  {
    name: 'TOWERWATCH_CLICKHOUSE_CLUSTER',
    field: 'clickhouseCluster',
    default: null,
    expected: "a cluster name from the servers' remote_servers (letters, digits, _ and -), with CLICKHOUSE_URL set",
    description:
      'ClickHouse cluster (a name in remote_servers) the schema spans: migrations run ON CLUSTER with Replicated engines (Keeper needed), rows are written and read through Distributed `*_all` tables sharded by enterprise. Needs CLICKHOUSE_URL. Unset: plain tables on one server.',
  },
  {
    name: 'TOWERWATCH_DATA_DIR',
    field: 'dataDir',
    default: DEFAULT_DATA_DIR,
    expected: 'a directory path',
    description: 'Directory for local state (nats-server store, embedded ClickHouse data); resolved to an absolute path.',
  },
  {
    name: 'TOWERWATCH_API_PORT',
    field: 'apiPort',
    default: String(DEFAULT_API_PORT),
    expected: 'an integer 0–65535',
    description: 'HTTP and WebSocket port of the api; 0 picks a free one (printed at start).',
  },
  {
    name: 'TOWERWATCH_API_HOST',
    field: 'apiHost',
    default: DEFAULT_API_HOST,
    expected: 'a host name or IP address',
    description: 'Address the api binds (0.0.0.0 to serve other machines, as in docker-compose).',
  },
  {
    name: 'TOWERWATCH_JWT_SECRET',
    field: 'jwtSecret',
    default: null,
    expected: `a string of at least ${MIN_JWT_SECRET_LENGTH} characters`,
    show: 'secret',
    description:
      "HMAC-SHA256 key of the api's access and refresh tokens. Unset: a random one is generated once and kept in the NATS KV bucket towerwatch-auth, shared by every api node.",
  },
  {
    name: 'TOWERWATCH_RATE_LIMIT',
    field: 'rateLimitPerMinute',
    default: String(DEFAULT_RATE_LIMIT_PER_MINUTE),
    expected: 'an integer 1–1000000',
    description: 'Api requests per minute per console account, all api nodes on the same NATS together (429 with Retry-After beyond it).',
  },
  {
    name: 'TOWERWATCH_ACCESS_TTL_SECONDS',
    field: 'accessTtlSeconds',
    default: String(DEFAULT_ACCESS_TTL_SECONDS),
    expected: 'an integer 70–86400',
    description: 'Lifetime of an api access token; refresh tokens last 7 days. Dashboards renew theirs a minute before it ends.',
  },
  {
    name: 'TOWERWATCH_RETENTION_DAYS',
    field: 'retentionDays',
    default: String(DEFAULT_RETENTION_DAYS),
    expected: `an integer 1–${MAX_RETENTION_DAYS}`,
    description:
      'Days of history kept in ClickHouse for rows of no enterprise (unregistered devices), for dead letters, and for an enterprise whose plan gives no usable `retention_days`. Each enterprise keeps the `retention_days` of its plan, longer or shorter.',
  },
  {
    name: 'TOWERWATCH_LOG_LEVEL',
    field: 'logLevel',
    default: DEFAULT_LOG_LEVEL,
    expected: `one of ${LOG_LEVELS.join(', ')}`,
    description: 'Least severe level logged (pino levels); `silent` logs nothing.',
  },
  {
    name: 'TOWERWATCH_LOG_FORMAT',
    field: 'logFormat',
    default: DEFAULT_LOG_FORMAT,
    expected: `one of ${LOG_FORMATS.join(', ')}`,
    description:
      'How logs are written to stderr: `text` status lines, `json` (pino JSON lines, one object each, for log shippers), or `auto`: text on a terminal, JSON otherwise.',
  },
  {
    name: 'TOWERWATCH_DEMO_PASSWORD',
    field: 'demoPassword',
    default: DEFAULT_DEMO_PASSWORD,
    expected: 'a non-empty string',
    show: 'secret',
    description: 'Password of the seeded demo console accounts. Change it anywhere reachable by others.',
  },
  {
    name: 'TOWERWATCH_NATS_RETRY_SECONDS',
    field: 'natsRetrySeconds',
    default: String(DEFAULT_NATS_RETRY_SECONDS),
    expected: 'an integer 1–3600',
    description:
      'How long JetStream publishes and requests are retried (backoff with jitter, by elapsed time) through a broker restart or a leader election before a batch is handed back for redelivery or a publisher gives up.',
  },
  {
    name: 'TOWERWATCH_BLOCK_PROOF_GRACE_SECONDS',
    field: 'blockProofGraceSeconds',
    default: String(DEFAULT_BLOCK_PROOF_GRACE_SECONDS),
    expected: 'an integer 1–3600',
    description:
      "How long a block's traffic may still arrive (in flight, a tower's reporting delay) before it counts against the block: a block whose traffic is stored after that is marked `ineffective`.",
  },
  {
    name: 'TOWERWATCH_BLOCK_SWEEP_SECONDS',
    field: 'blockSweepSeconds',
    default: String(DEFAULT_BLOCK_SWEEP_SECONDS),
    expected: 'an integer 1–3600',
    description: 'How often the remediation worker lifts expired blocks and checks active ones for traffic that should have stopped.',
  },
  {
    name: 'TOWERWATCH_MEMORY_TRIM_SECONDS',
    field: 'memoryTrimSeconds',
    default: String(DEFAULT_MEMORY_TRIM_SECONDS),
    expected: 'an integer 0–3600',
    description:
      "How often a pipeline process hands the free pages kept by glibc's malloc back to the system (`malloc_trim`, off the event loop); 0 never. Without it the resident size stays near its peak.",
  },
  {
    name: 'TOWERWATCH_NATS_REPLICAS',
    field: 'natsReplicas',
    default: '1',
    expected: 'one of 1, 3, 5',
    description:
      'Replicas of every JetStream stream and KV bucket towerwatch creates or opens: 1 for one nats-server, 3 or 5 in a cluster (that many servers at least). Raised on start when lower; never lowered (a stream made R3 by hand stays R3).',
  },
  {
    name: 'TOWERWATCH_MAX_DELIVER',
    field: 'maxDeliver',
    default: String(DEFAULT_MAX_DELIVER),
    expected: `an integer 1–${MAX_MAX_DELIVER}`,
    description:
      'Deliveries of a usage message whose processing fails (a worker throws or dies on it) before the pipeline moves it to the dead letters with reason processing_failed and acks it; earlier failures are retried with a growing delay.',
  },
  {
    name: 'TOWERWATCH_PIPELINE_PORT',
    field: 'pipelinePort',
    default: String(DEFAULT_PIPELINE_PORT),
    expected: 'an integer 0–65535',
    description:
      "Port of the pipeline's `/healthz`, `/readyz` and `/metrics` (Prometheus), served by `towerwatch pipeline` and by `up`; 0 picks a free one (printed at start).",
  },
  {
    name: 'TOWERWATCH_PIPELINE_HOST',
    field: 'pipelineHost',
    default: DEFAULT_PIPELINE_HOST,
    expected: 'a host name or IP address',
    description: "Address the pipeline's health and metrics server binds (0.0.0.0 for probes and scrapers on other machines).",
  },
  {
    name: 'TOWERWATCH_METRICS_TOKEN',
    field: 'metricsToken',
    default: null,
    expected: `a string of at least ${MIN_METRICS_TOKEN_LENGTH} printable characters without spaces`,
    show: 'secret',
    description:
      'Bearer token that `/metrics` requires (`Authorization: Bearer <token>`). Unset: `/metrics` answers loopback clients only (403 to others). `/healthz` and `/readyz` need no token.',
  },
] as const satisfies readonly ConfigVariable[];

export type ConfigVariableName = (typeof CONFIG_VARIABLES)[number]['name'];

export interface ConfigIssue {
  readonly variable: ConfigVariableName;
  readonly message: string;
}

/** Invalid environment: `issues` has one entry per offending variable; the message lists them all. */
export class ConfigError extends CodedError<'invalid_config'> {
  readonly issues: readonly ConfigIssue[];
  constructor(issues: readonly ConfigIssue[], options?: ErrorOptions) {
    super('invalid_config', `invalid configuration:\n${issues.map((i) => `  - ${i.message}`).join('\n')}`, options);
    this.issues = issues;
  }
}

const NATS_SCHEMES = new Set(['nats:', 'tls:', 'ws:', 'wss:']);

function isNatsUrl(s: string): boolean {
  // nats.js also accepts a bare host:port; give it a scheme so URL can parse it.
  const candidate = /^[a-z]+:\/\//i.test(s) ? s : `nats://${s}`;
  try {
    const u = new URL(candidate);
    return NATS_SCHEMES.has(u.protocol) && u.hostname !== '';
  } catch {
    return false;
  }
}

function isHttpUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '';
  } catch {
    return false;
  }
}

/** A variable that may be unset: `dflt` (null: none) when it is. */
const orDefault = <T, D>(schema: z.ZodType<T, string>, dflt: D) => schema.optional().transform((v) => v ?? dflt);

const integer = (min: number, max: number, dflt: number) =>
  orDefault(z.string().regex(/^\d+$/).transform(Number).pipe(z.number().int().min(min).max(max)), dflt);

const host = (dflt: string) => orDefault(z.string().regex(/^[A-Za-z0-9.:_-]+$/), dflt);

/** One of `values`, in any case. */
const caseInsensitiveEnum = <const V extends readonly [string, ...string[]]>(values: V, dflt: V[number]) =>
  orDefault(
    z
      .string()
      .transform((s) => s.toLowerCase())
      .pipe(z.enum(values)),
    dflt,
  );

/** One schema per variable; messages are built from {@link CONFIG_VARIABLES}, not from zod's. */
const SCHEMAS: { readonly [K in ConfigVariableName]: z.ZodType<unknown, string | undefined> } = {
  NATS_URL: orDefault(
    z
      .string()
      .refine((s) => s.split(',').every((part) => isNatsUrl(part.trim())))
      .transform((s) =>
        s
          .split(',')
          .map((p) => p.trim())
          .join(','),
      ),
    null,
  ),
  TOWERWATCH_NATS_PORT: integer(0, 65535, DEFAULT_NATS_PORT),
  CLICKHOUSE_URL: orDefault(z.string().refine(isHttpUrl), null),
  TOWERWATCH_CLICKHOUSE_CLUSTER: orDefault(z.string().regex(CLUSTER_NAME), null),
  TOWERWATCH_DATA_DIR: orDefault(z.string(), DEFAULT_DATA_DIR),
  TOWERWATCH_API_PORT: integer(0, 65535, DEFAULT_API_PORT),
  TOWERWATCH_API_HOST: host(DEFAULT_API_HOST),
  TOWERWATCH_JWT_SECRET: orDefault(z.string().min(MIN_JWT_SECRET_LENGTH), null),
  TOWERWATCH_RATE_LIMIT: integer(1, 1_000_000, DEFAULT_RATE_LIMIT_PER_MINUTE),
  TOWERWATCH_ACCESS_TTL_SECONDS: integer(70, 86_400, DEFAULT_ACCESS_TTL_SECONDS),
  TOWERWATCH_RETENTION_DAYS: integer(1, MAX_RETENTION_DAYS, DEFAULT_RETENTION_DAYS),
  TOWERWATCH_LOG_LEVEL: caseInsensitiveEnum(LOG_LEVELS, DEFAULT_LOG_LEVEL),
  TOWERWATCH_LOG_FORMAT: caseInsensitiveEnum(LOG_FORMATS, DEFAULT_LOG_FORMAT),
  TOWERWATCH_DEMO_PASSWORD: orDefault(z.string(), DEFAULT_DEMO_PASSWORD),
  TOWERWATCH_NATS_RETRY_SECONDS: integer(1, 3600, DEFAULT_NATS_RETRY_SECONDS),
  TOWERWATCH_BLOCK_PROOF_GRACE_SECONDS: integer(1, 3600, DEFAULT_BLOCK_PROOF_GRACE_SECONDS),
  TOWERWATCH_BLOCK_SWEEP_SECONDS: integer(1, 3600, DEFAULT_BLOCK_SWEEP_SECONDS),
  TOWERWATCH_MEMORY_TRIM_SECONDS: integer(0, 3600, DEFAULT_MEMORY_TRIM_SECONDS),
  TOWERWATCH_NATS_REPLICAS: orDefault(z.enum(['1', '3', '5']).transform(Number), 1),
  TOWERWATCH_MAX_DELIVER: integer(1, MAX_MAX_DELIVER, DEFAULT_MAX_DELIVER),
  TOWERWATCH_PIPELINE_PORT: integer(0, 65535, DEFAULT_PIPELINE_PORT),
  TOWERWATCH_PIPELINE_HOST: host(DEFAULT_PIPELINE_HOST),
  TOWERWATCH_METRICS_TOKEN: orDefault(z.string().regex(new RegExp(`^[\\x21-\\x7e]{${MIN_METRICS_TOKEN_LENGTH},}$`)), null),
};

/** A URL (or comma-separated URLs) with every password replaced by `***`; unparseable userinfo too. */
export function redactUrl(value: string): string {
  return value.replace(/(\/\/[^/@\s,]*?):[^@\s,]*@/g, '$1:***@').replace(/([?&](?:password|pass|pwd|token|secret)=)[^&\s,]*/gi, '$1***');
}

/** How a rejected value appears in an error message: never a secret, never a password in a URL. */
function shown(variable: ConfigVariable, raw: string | undefined): string {
  const value = raw ?? '';
  if (variable.show === 'secret') return value === '' ? 'nothing' : `a value of ${value.trim().length} characters (not shown)`;
  if (variable.show === 'url') return `'${redactUrl(value)}'`;
  return `'${value}'`;
}

export interface LoadConfigOptions {
  /** Base for a relative TOWERWATCH_DATA_DIR. @default process.cwd() */
  cwd?: string;
}

/**
 * Reads and validates the environment. Pure apart from `process.cwd()` (override with `cwd`).
 * @throws {ConfigError} naming every offending variable and what it expects.
 */
export function loadConfig(env: Readonly<Record<string, string | undefined>> = process.env, options: LoadConfigOptions = {}): Readonly<Config> {
  const issues: ConfigIssue[] = [];
  const out: Record<string, unknown> = {};
  for (const variable of CONFIG_VARIABLES as readonly (ConfigVariable & { name: ConfigVariableName })[]) {
    const raw = env[variable.name];
    // Trim: values from env files often carry stray spaces; blank means unset.
    const trimmed = raw === undefined || raw.trim() === '' ? undefined : raw.trim();
    const parsed = SCHEMAS[variable.name].safeParse(trimmed);
    if (parsed.success) {
      out[variable.field] = parsed.data;
    } else {
      issues.push({
        variable: variable.name,
        message: `${variable.name} must be ${variable.expected}, got ${shown(variable, raw)}`,
      });
    }
  }
  if (out['clickhouseCluster'] !== null && out['clickhouseCluster'] !== undefined && out['clickhouseUrl'] === null) {
    issues.push({
      variable: 'TOWERWATCH_CLICKHOUSE_CLUSTER',
      message: 'TOWERWATCH_CLICKHOUSE_CLUSTER needs CLICKHOUSE_URL (a server of that cluster); the embedded engine is one node',
    });
  }
  if (issues.length > 0) throw new ConfigError(issues);
  const cfg = out as unknown as Config;
  return Object.freeze({ ...cfg, dataDir: resolve(options.cwd ?? process.cwd(), cfg.dataDir) });
}

/**
 * Where the CLIs find NATS: NATS_URL, or the local nats-server that `up` starts.
 * @throws {ConfigError} when that port is 0: only `up` knows which port it picked.
 */
export function natsUrlOf(config: Pick<Config, 'natsUrl' | 'natsPort'>): string {
  if (config.natsUrl !== null) return config.natsUrl;
  if (config.natsPort === 0) {
    throw new ConfigError([
      {
        variable: 'NATS_URL',
        message: 'NATS_URL is unset while TOWERWATCH_NATS_PORT is 0 (a port `towerwatch up` picks at start): set NATS_URL to the address up printed',
      },
    ]);
  }
  return `nats://127.0.0.1:${config.natsPort}`;
}

/** The variables as a Markdown table, for docs. */
export function configVariablesMarkdown(): string {
  const rows = CONFIG_VARIABLES.map((v) => `| \`${v.name}\` | ${v.default === null ? '(unset)' : `\`${v.default}\``} | ${v.description} |`);
  return ['| variable | default | meaning |', '| --- | --- | --- |', ...rows].join('\n');
}

/**
 * Test helper: `towerwatch pipeline` as a child process (killable for real), its output
 * collected. Every one started is tracked, so a test file can end them all in `after`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../../bin/towerwatch.js', import.meta.url));

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface PipelineProcessOptions {
  natsUrl: string;
  dataDir: string;
  /** ClickHouse over HTTP; absent: the embedded engine in `dataDir`. */
  clickhouseUrl?: string;
  /** More variables (TOWERWATCH_*), over the inherited environment. */
  env?: Record<string, string>;
  /** More arguments of `towerwatch pipeline`. */
  args?: readonly string[];
}

const running = new Set<PipelineProcess>();

export class PipelineProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<ProcessExit>;
  output = '';
  exit: ProcessExit | null = null;

  constructor(
    readonly name: string,
    options: PipelineProcessOptions,
  ) {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      NATS_URL: options.natsUrl,
      TOWERWATCH_DATA_DIR: options.dataDir,
      TOWERWATCH_PIPELINE_PORT: '0',
      TOWERWATCH_LOG_FORMAT: 'text',
      ...options.env,
    };
    if (options.clickhouseUrl === undefined) delete env['CLICKHOUSE_URL'];
    else env['CLICKHOUSE_URL'] = options.clickhouseUrl;
    this.child = spawn(process.execPath, [CLI, 'pipeline', ...(options.args ?? [])], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout?.setEncoding('utf8').on('data', (c: string) => (this.output += c));
    this.child.stderr?.setEncoding('utf8').on('data', (c: string) => (this.output += c));
    this.exited = new Promise((resolve) => {
      this.child.once('close', (code, signal) => {
        this.exit = { code, signal };
        running.delete(this);
        resolve(this.exit);
      });
    });
    running.add(this);
  }

  /** Resolves once the pipeline says it is consuming; rejects if it exits first. */
  async ready(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.output.includes('pipeline: consuming from')) {
      if (this.exit !== null) throw new Error(`${this.name} exited (${JSON.stringify(this.exit)}) before consuming:\n${this.output}`);
      if (Date.now() > deadline) throw new Error(`${this.name} not consuming after ${timeoutMs} ms:\n${this.output}`);
      await sleep(20);
    }
  }

  async kill(signal: NodeJS.Signals, timeoutMs = 30_000): Promise<ProcessExit> {
    if (this.exit === null) this.child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.name} did not exit within ${timeoutMs} ms of ${signal}:\n${this.output}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** SIGKILLs every pipeline process still running (for `after`/`afterEach`). */
export async function killAllPipelines(): Promise<void> {
  await Promise.allSettled([...running].map((p) => p.kill('SIGKILL', 10_000)));
}

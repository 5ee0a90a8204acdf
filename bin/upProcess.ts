/**
 * `towerwatch up` as a child process, its output collected as it comes: for tests
 * (upHarness.ts) and the chaos run (chaos.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('./towerwatch.js', import.meta.url));
export const HOST = '127.0.0.1';

/**
 * Environment for an `up` of its own: its data dir, no NATS_URL (so it starts its own
 * nats-server), and port 0 for nats-server, the api and the pipeline's health server, which
 * bind free ports themselves (a port picked beforehand could be taken before `up` binds it);
 * `Up.natsUrl` and `Up.apiUrl` read back what `up` printed.
 */
export function ownUpEnv(dataDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TOWERWATCH_DATA_DIR: dataDir,
    TOWERWATCH_NATS_PORT: '0',
    TOWERWATCH_API_PORT: '0',
    TOWERWATCH_PIPELINE_PORT: '0',
  };
  delete env['NATS_URL'];
  return env;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** `towerwatch up` as a child process, its stderr collected as it comes. */
export class Up {
  readonly child: ChildProcess;
  readonly exited: Promise<Exit>;
  stderr = '';
  stdout = '';
  exit: Exit | null = null;

  constructor(args: readonly string[], env: NodeJS.ProcessEnv) {
    // Its own process group, so that cleanup can take the nats-server child along if `up` hangs.
    // Text lines (not the JSON a pipe would get by default): the tests and chaos read them.
    this.child = spawn(process.execPath, [CLI, 'up', ...args], {
      env: { TOWERWATCH_LOG_FORMAT: 'text', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    this.child.stdout?.setEncoding('utf8').on('data', (c: string) => (this.stdout += c));
    this.child.stderr?.setEncoding('utf8').on('data', (c: string) => (this.stderr += c));
    this.exited = new Promise((resolve) => {
      this.child.once('close', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
    });
  }

  /** Resolves once stderr matches every pattern; rejects if `up` exits first or at the deadline. */
  async waitForOutput(patterns: readonly RegExp[], timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const seen = () => patterns.every((p) => p.test(this.stderr));
    while (!seen()) {
      if (this.exit !== null) throw new Error(`up exited (${JSON.stringify(this.exit)}) before printing ${patterns.join(', ')}; stderr:\n${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`up did not print ${patterns.join(', ')} within ${timeoutMs} ms; stderr:\n${this.stderr}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** The nats-server address `up` printed; throws before it has. */
  get natsUrl(): string {
    return this.printed(/^up: nats-server (nats:\/\/\S+)/m, 'nats-server');
  }

  /** The api address `up` printed; throws before it has. */
  get apiUrl(): string {
    return this.printed(/^up: api (http:\/\/\S+)/m, 'api');
  }

  private printed(pattern: RegExp, what: string): string {
    const m = pattern.exec(this.stderr);
    if (m?.[1] === undefined) throw new Error(`up has not printed its ${what} address yet; stderr:\n${this.stderr}`);
    return m[1];
  }

  /** The exit, or a rejection if it does not come within `timeoutMs`. */
  async waitForExit(timeoutMs: number): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`up did not exit within ${timeoutMs} ms; stderr:\n${this.stderr}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Cleanup: the whole process group, even when `up` itself is gone: an `up` killed by a
   * signal leaves its nats-server behind (its exit handler does not run), in this group.
   */
  async kill(): Promise<void> {
    if (this.child.pid === undefined) return;
    try {
      process.kill(-this.child.pid, 'SIGKILL');
    } catch {
      // ESRCH: nothing left in the group
    }
    await this.exited;
  }
}

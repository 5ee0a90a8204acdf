/**
 * For tests: `towerwatch up` as a child process with its own data dir and ports, its output
 * collected, and everything it started killed at the end of the test file.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { Up } from './upProcess.js';

export { HOST, Up, type Exit } from './upProcess.js';

const started = new Set<Up>();
const tempDirs: string[] = [];
after(async () => {
  await Promise.all([...started].map((u) => u.kill()));
  await Promise.all(tempDirs.map((d) => rm(d, { recursive: true, force: true })));
});

/**
 * Environment for an `up` with its own data dir and no NATS_URL. Port 0: nats-server, the api
 * and the pipeline's health server bind free ports themselves (a port picked here could be
 * taken before `up` binds it, by a test running beside it); `Up.natsUrl` and `Up.apiUrl` read
 * back what `up` printed.
 */
export async function upEnv(): Promise<{ env: NodeJS.ProcessEnv; dataDir: string }> {
  const dataDir = await mkdtemp(join(tmpdir(), 'towerwatch-up-test-'));
  tempDirs.push(dataDir);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TOWERWATCH_DATA_DIR: dataDir,
    TOWERWATCH_NATS_PORT: '0',
    TOWERWATCH_API_PORT: '0',
    TOWERWATCH_PIPELINE_PORT: '0',
  };
  delete env['NATS_URL'];
  return { env, dataDir };
}

export function startUp(args: readonly string[], env: NodeJS.ProcessEnv): Up {
  const up = new Up(args, env);
  started.add(up);
  return up;
}

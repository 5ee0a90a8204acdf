/**
 * For tests: `towerwatch up` as a child process with its own data dir and ports, its output
 * collected, and everything it started killed at the end of the test file.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { ownUpEnv, Up } from './upProcess.js';

export { HOST, Up, type Exit } from './upProcess.js';

const started = new Set<Up>();
const tempDirs: string[] = [];
after(async () => {
  await Promise.all([...started].map((u) => u.kill()));
  await Promise.all(tempDirs.map((d) => rm(d, { recursive: true, force: true })));
});

/** Environment for an `up` with its own data dir, removed after the test file (see {@link ownUpEnv}). */
export async function upEnv(): Promise<{ env: NodeJS.ProcessEnv; dataDir: string }> {
  const dataDir = await mkdtemp(join(tmpdir(), 'towerwatch-up-test-'));
  tempDirs.push(dataDir);
  return { env: ownUpEnv(dataDir), dataDir };
}

export function startUp(args: readonly string[], env: NodeJS.ProcessEnv): Up {
  const up = new Up(args, env);
  started.add(up);
  return up;
}

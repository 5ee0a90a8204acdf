/**
 * Insert bodies handed to the embedded engine as files: `INSERT … FROM INFILE` reads a file with
 * the engine's parallel parser, about twice as fast as the same TabSeparated body given inline
 * (chdb's raw insert) from about 1 MB up, and with less CPU per row (bench/insertBench.ts).
 *
 * Files live in memory where it can (`/dev/shm`), each in a directory of this process
 * (`towerwatch-insert-<pid>-…`), and are removed as soon as their insert ends; a directory left
 * by a process killed mid-insert is removed by the next process that opens a spool.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processAlive } from '../processes.js';
import type { InsertBody } from './open.js';

const PREFIX = 'towerwatch-insert-';
const SHM = '/dev/shm';

/** Where spool directories go: memory when the machine has it, else the temporary directory. */
export function spoolBase(): string {
  return existsSync(SHM) ? SHM : tmpdir();
}

export class InsertSpool {
  readonly dir: string;
  #next = 0;

  constructor(base: string = spoolBase()) {
    removeStaleSpools(base);
    this.dir = mkdtempSync(join(base, `${PREFIX}${process.pid}-`));
  }

  /**
   * Writes `body` to a new file and runs `use(path)`; the file is removed whatever `use` does.
   * When the file cannot be written (a small `/dev/shm`, as containers have by default, is
   * full) it runs `use(null)` instead: the caller inserts the body inline, slower but stored.
   */
  async with<T>(body: InsertBody, use: (path: string | null) => Promise<T>): Promise<T> {
    const path = join(this.dir, `${++this.#next}.body`);
    try {
      try {
        // Parts are written one after the other, never joined in memory first.
        await writeFile(path, body);
      } catch {
        await unlink(path).catch(() => undefined);
        return await use(null);
      }
      return await use(path);
    } finally {
      await unlink(path).catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Removes spool directories of processes that are gone (killed mid-insert). */
export function removeStaleSpools(base: string): number {
  let removed = 0;
  let names: string[];
  try {
    names = readdirSync(base);
  } catch {
    return 0;
  }
  for (const name of names) {
    if (!name.startsWith(PREFIX)) continue;
    const pid = Number(/^(\d+)-/.exec(name.slice(PREFIX.length))?.[1]);
    if (!Number.isInteger(pid) || pid === process.pid || processAlive(pid)) continue;
    try {
      rmSync(join(base, name), { recursive: true, force: true });
      removed++;
    } catch {
      // someone else's, or already gone
    }
  }
  return removed;
}

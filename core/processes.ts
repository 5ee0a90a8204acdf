/** Facts about other processes on this machine, from signals and /proc (Linux). */
import { readFile } from 'node:fs/promises';

/** Whether a process with this pid exists (EPERM: it exists but belongs to someone else). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Its command line, arguments joined by spaces; '' when it is gone or unreadable. */
export async function processCmdline(pid: number): Promise<string> {
  try {
    return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).replaceAll('\0', ' ');
  } catch {
    return '';
  }
}

/** Resident memory in bytes; 0 when it is gone. */
export async function processRssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const kb = /VmRSS:\s+(\d+)/.exec(status)?.[1];
  return kb ? Number(kb) * 1024 : 0;
}

/**
 * Whether it has ended: gone, or a zombie (exited, not yet reaped by its parent), which holds
 * no port and no file any more.
 */
export async function processEnded(pid: number): Promise<boolean> {
  const state = await readFile(`/proc/${pid}/stat`, 'utf8').then(
    (s) => s.slice(s.lastIndexOf(')') + 2)[0],
    () => 'X',
  );
  return state === 'Z' || state === 'X';
}

/** User + system CPU seconds it has used (threads included); 0 when it is gone. Clock ticks are 1/100 s on Linux. */
export async function processCpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
  return ticks / 100;
}

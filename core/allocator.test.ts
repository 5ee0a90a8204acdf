import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { startAllocatorTrim } from './allocator.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** This process's resident size from /proc (process.memoryUsage() would do, but this is what ops see). */
function rssMb(): number {
  const line = readFileSync('/proc/self/status', 'utf8').match(/^VmRSS:\s+(\d+) kB/m);
  return Number(line?.[1] ?? 0) / 1024;
}

/** 2,000 blocks of 100 kB written to (resident), of which every tenth is returned and the rest dropped. */
function allocateAndFreeMost(): Buffer[] {
  const blocks: Buffer[] = [];
  for (let i = 0; i < 2000; i++) blocks.push(Buffer.allocUnsafeSlow(100_000).fill(1));
  return blocks.filter((_, i) => i % 10 === 0);
}

describe('allocator trim', () => {
  it('hands back the free pages malloc keeps between live blocks', { skip: process.platform !== 'linux' }, async () => {
    const trimmer = startAllocatorTrim(0);
    assert.ok(trimmer, 'glibc and koffi are here (Debian): the trimmer starts');
    trimmer.close();
    // 200 MB in 100 kB blocks (malloc'd, below the mmap threshold), one in ten kept: the holes
    // between the kept ones cannot go back by shrinking the heap's top, only by malloc_trim.
    const kept = allocateAndFreeMost();
    gc();
    await sleep(100);
    gc();
    const freed = rssMb();
    const running = startAllocatorTrim(20);
    try {
      const until = Date.now() + 5000;
      while (Date.now() < until && (running?.stats.trims ?? 0) < 3) await sleep(20);
      assert.ok((running?.stats.trims ?? 0) >= 3, 'trims ran on the thread pool');
      const trimmed = rssMb();
      assert.ok(freed - trimmed > 100, `RSS ${freed.toFixed(0)} MB after the frees, ${trimmed.toFixed(0)} MB after trimming`);
    } finally {
      running?.close();
    }
    assert.equal(kept.length, 200);
  });
});

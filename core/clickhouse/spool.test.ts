import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { InsertSpool, removeStaleSpools } from './spool.js';

test('a spool file exists while its insert runs and is removed after, even when the insert fails', async () => {
  const base = await mkdtemp(join(tmpdir(), 'towerwatch-spool-'));
  try {
    const spool = new InsertSpool(base);
    let seen = '';
    const n = await spool.with(Buffer.from('1\tx\n'), async (path) => {
      assert.ok(path !== null, 'the file was written');
      seen = path;
      assert.equal(await readFile(path, 'utf8'), '1\tx\n');
      return 7;
    });
    assert.equal(n, 7);
    assert.equal(existsSync(seen), false);
    await assert.rejects(
      spool.with(Buffer.from('2\n'), async (path) => {
        seen = path ?? '';
        throw new Error('engine said no');
      }),
      /engine said no/,
    );
    assert.equal(existsSync(seen), false);
    await spool.close();
    assert.deepEqual(await readdir(base), []);
  } finally {
    await rm(base, { recursive: true, force: true });
  }
});

test('a file that cannot be written (a full /dev/shm) hands the body back for an inline insert', async () => {
  const base = await mkdtemp(join(tmpdir(), 'towerwatch-spool-'));
  try {
    const spool = new InsertSpool(base);
    // The spool's directory gone: every write fails, as on a full filesystem.
    await rm(spool.dir, { recursive: true });
    const seen: Array<string | null> = [];
    assert.equal(
      await spool.with(Buffer.from('1\n'), async (path) => {
        seen.push(path);
        return 'inline';
      }),
      'inline',
    );
    assert.deepEqual(seen, [null]);
    await spool.close();
  } finally {
    await rm(base, { recursive: true, force: true });
  }
});

test('directories of processes that are gone are removed; live ones and foreign names are kept', async () => {
  const base = await mkdtemp(join(tmpdir(), 'towerwatch-spool-'));
  try {
    // A pid that surely ended: a child that has exited.
    const dead = spawnSync(process.execPath, ['-e', 'process.pid']).pid;
    await mkdir(join(base, `towerwatch-insert-${dead}-abc`));
    await mkdir(join(base, `towerwatch-insert-${process.pid}-live`));
    await mkdir(join(base, 'someone-else'));
    assert.equal(removeStaleSpools(base), 1);
    assert.deepEqual((await readdir(base)).sort(), ['someone-else', `towerwatch-insert-${process.pid}-live`]);
    // Opening a spool does the same sweep.
    await mkdir(join(base, `towerwatch-insert-${dead}-def`));
    const spool = new InsertSpool(base);
    assert.equal((await readdir(base)).filter((n) => n.includes(`-${dead}-`)).length, 0);
    await spool.close();
  } finally {
    await rm(base, { recursive: true, force: true });
  }
});

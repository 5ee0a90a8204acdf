import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, lineLogger, type LoggerOptions, type LogLine } from './log.js';

/** What a logger with these options writes, read back from a file (never a TTY). */
function written(options: Omit<LoggerOptions, 'fd'>, write: (log: LogLine) => void, component?: string): string {
  const path = join(mkdtempSync(join(tmpdir(), 'tw-log-')), 'out.log');
  const fd = openSync(path, 'w');
  try {
    write(lineLogger(createLogger({ ...options, fd }), component));
  } finally {
    closeSync(fd);
  }
  return readFileSync(path, 'utf8');
}

test('json: one pino object per line, the leading name as its component', () => {
  const out = written({ level: 'info', format: 'json' }, (log) => {
    log('pipeline: stored 1,000 events');
    log('a line of no component');
    log('sink: insert failed: x: y', 'warn');
  });
  const lines = out
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(lines.length, 3);
  assert.deepEqual(
    lines.map((l) => [l['level'], l['component'], l['msg']]),
    [
      [30, 'pipeline', 'stored 1,000 events'],
      [30, undefined, 'a line of no component'],
      [40, 'sink', 'insert failed: x: y'],
    ],
  );
  assert.equal(typeof lines[0]?.['time'], 'number');
});

test('text (not a TTY): the status lines as written, no colour; levels below the threshold dropped', () => {
  const out = written({ level: 'warn', format: 'text' }, (log) => {
    log('pipeline: stored 1,000 events');
    log('up: nats-server restarted', 'warn');
    log('api: cannot listen', 'error');
  });
  assert.equal(out, 'up: nats-server restarted\napi: cannot listen\n');
});

test('auto on a file (not a TTY) is JSON; a fixed component wins over the line', () => {
  const out = written({ level: 'info', format: 'auto' }, (log) => log('x: sent 5'), 'simulate');
  const line = JSON.parse(out) as Record<string, unknown>;
  assert.equal(line['component'], 'simulate');
  assert.equal(line['msg'], 'x: sent 5');
});

/**
 * Process logs through pino. Components stay decoupled from it: they take a {@link LogLine}
 * callback (tests collect lines in an array) and a process's entry point hands them
 * {@link lineLogger} of one pino logger.
 *
 * Two formats: `text`, the status lines people read on a terminal (`pipeline: stored 1,000…`,
 * warnings and errors marked), and `json`, one pino JSON object per line for log shippers
 * (`{"level":30,"time":…,"component":"pipeline","msg":"stored 1,000…"}`). `auto` picks text on
 * a TTY and JSON otherwise.
 */
import { createRequire } from 'node:module';
import type * as Pino from 'pino';
import type { Logger } from 'pino';
import type { PrettyOptions } from 'pino-pretty';
import type { Config, LogFormat, LogLevel } from './config.js';

/** How serious a line is; most are `info`. */
export type LineLevel = 'info' | 'warn' | 'error';

/** What components log through: one human sentence, optionally led by its component (`api: …`). */
export type LogLine = (line: string, level?: LineLevel) => void;

export interface LoggerOptions {
  readonly level: LogLevel;
  readonly format: LogFormat;
  /** File descriptor written to. @default 2 (stderr: stdout is for command output) */
  readonly fd?: number;
}

// Loaded when a logger is made, not when this module is: every `towerwatch` command imports it,
// and most (simulate, rules, accounts) never log.
const require = createRequire(import.meta.url);

export function createLogger(options: LoggerOptions): Logger {
  const { pino } = require('pino') as typeof Pino;
  const fd = options.fd ?? 2;
  const tty = isTty(fd);
  const format = options.format === 'auto' ? (tty ? 'text' : 'json') : options.format;
  if (format === 'json') return pino({ level: options.level, base: { pid: process.pid } }, pino.destination({ dest: fd, sync: true }));
  const pretty = require('pino-pretty') as (options: PrettyOptions) => NodeJS.WritableStream;
  const stream = pretty({
    destination: fd,
    sync: true,
    colorize: tty,
    hideObject: true,
    messageFormat: (log, messageKey, _levelLabel, { colors }) => {
      const component = typeof log['component'] === 'string' ? `${log['component']}: ` : '';
      const line = `${component}${String(log[messageKey])}`;
      const level = typeof log['level'] === 'number' ? log['level'] : 30;
      if (level >= 50) return colors.red(line);
      return level >= 40 ? colors.yellow(line) : line;
    },
    ignore: 'pid,hostname,time,level,component',
  });
  return pino({ level: options.level }, stream);
}

/** A leading `name: ` is the line's component (the convention of every status line here). */
const COMPONENT = /^([a-z][\w-]*): (.*)$/s;

/**
 * A {@link LogLine} writing to `logger`. With `component`, every line is that component's;
 * without, a leading `name: ` of the line names it, so the JSON carries it as a field.
 */
export function lineLogger(logger: Logger, component?: string): LogLine {
  return (line, level = 'info') => {
    const m = component === undefined ? COMPONENT.exec(line) : null;
    const name = component ?? m?.[1];
    const msg = m?.[2] ?? line;
    if (name === undefined) logger[level](msg);
    else logger[level]({ component: name }, msg);
  };
}

/** The {@link LogLine} of a process, as its configuration asks (`TOWERWATCH_LOG_LEVEL`, `_FORMAT`). */
export function processLog(config: Pick<Config, 'logLevel' | 'logFormat'>): LogLine {
  return lineLogger(createLogger({ level: config.logLevel, format: config.logFormat }));
}

function isTty(fd: number): boolean {
  if (fd === 1) return process.stdout.isTTY === true;
  if (fd === 2) return process.stderr.isTTY === true;
  return false;
}

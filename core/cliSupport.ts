/**
 * What every subcommand does the same way: print an error without a stack trace and exit 1,
 * and load the configuration or say precisely which variable is wrong.
 */
import { InvalidArgumentError } from 'commander';
import { ConfigError, loadConfig, natsUrlOf, type Config } from './config.js';

export function fail(message: string): never {
  process.stderr.write(`error: ${message}\n`);
  process.exit(1);
}

/** What `read` returns; a configuration error exits 1 with its message instead of a stack trace. */
function orExit<T>(read: () => T): T {
  try {
    return read();
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
}

/** NATS_URL or the local server's address; exits 1 with the reason when there is neither. */
export function natsUrlOrExit(config: Config): string {
  return orExit(() => natsUrlOf(config));
}

export function loadConfigOrExit(): Config {
  return orExit(() => loadConfig());
}

/** commander argument parsers whose messages name the flag. */
export function integerOption(flag: string, allowZero = false): (value: string) => number {
  return positiveOption(flag, allowZero, Number.isSafeInteger, 'integer');
}

export function numberOption(flag: string, allowZero = false): (value: string) => number {
  return positiveOption(flag, allowZero, Number.isFinite, 'number');
}

/** A parser of a positive (or, with `allowZero`, non-negative) value that passes `valid`. */
function positiveOption(flag: string, allowZero: boolean, valid: (n: number) => boolean, noun: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!valid(n) || n < 0 || (!allowZero && n === 0))
      throw new InvalidArgumentError(`${flag} must be a ${allowZero ? 'non-negative' : 'positive'} ${noun}, got '${value}'`);
    return n;
  };
}

export function ratioOption(flag: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < 0 || n > 1) throw new InvalidArgumentError(`${flag} must be a number from 0 to 1, got '${value}'`);
    return n;
  };
}

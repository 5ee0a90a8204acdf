/**
 * Loads uWebSockets.js and refuses to run on its fallback. The package installed under that name
 * (see ARCHITECTURE.md: @trufflesuite/uws-js-unofficial, real uWS native builds for glibc 2.36)
 * silently switches to a slow `ws` shim when its native build does not load (another Node ABI,
 * another platform, UWS_USE_FALLBACK set): a server that would then run many times slower
 * without saying so is refused here with the reason.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type * as UwsModule from 'uWebSockets.js';

export type Uws = typeof UwsModule;

export class UwsLoadError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'UwsLoadError';
  }
}

const require = createRequire(import.meta.url);
let loaded: Uws | undefined;

/** The native uWebSockets.js module. @throws {UwsLoadError} when only the fallback loads. */
export function loadUws(): Uws {
  if (loaded !== undefined) return loaded;
  const binary = join(
    dirname(require.resolve('uWebSockets.js/package.json')),
    'binaries',
    `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`,
  );
  let native: unknown;
  try {
    native = require(binary);
  } catch (err) {
    throw new UwsLoadError(
      `the native uWebSockets.js build does not load here (${process.platform}-${process.arch}, Node ABI ${process.versions.modules}, ` +
        `Node ${process.version}): ${err instanceof Error ? err.message.split('\n')[0] : String(err)}. ` +
        'towerwatch needs Node 20 on Linux, macOS or Windows (x64/arm64); it does not run on the slow fallback.',
      { cause: err },
    );
  }
  const uws = require('uWebSockets.js') as Uws;
  if (uws !== native) {
    throw new UwsLoadError(
      'uWebSockets.js loaded its ws-based fallback instead of the native build' +
        `${process.env['UWS_USE_FALLBACK'] ? ' (UWS_USE_FALLBACK is set: unset it)' : ''}; refusing to serve on it.`,
    );
  }
  return (loaded = uws);
}

/**
 * Bundles the dashboard page (api/web/, TypeScript + Preact + uPlot) with esbuild into
 * dist/web/: index.html and content-hashed assets. Prints each file's size and its gzip size,
 * writes them to dist/web/build.json, and fails when the page passes its budget.
 * Run by `npm run build` after tsc; TOWERWATCH_PAGE_DEBUG=1 leaves the bundle unminified (for profiling).
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build, type BuildOptions } from 'esbuild';

/** Gzipped bytes the whole page (JS + CSS + HTML) may take. */
export const PAGE_BUDGET_GZIP_BYTES = 300 * 1024;

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SRC = join(ROOT, 'api', 'web');
const OUT = join(ROOT, 'dist', 'web');

export interface PageFile {
  file: string;
  bytes: number;
  gzip_bytes: number;
}

export interface PageBuild {
  files: PageFile[];
  total_bytes: number;
  total_gzip_bytes: number;
  budget_gzip_bytes: number;
  built_at: string;
}

const options: BuildOptions = {
  entryPoints: [join(SRC, 'main.tsx')],
  bundle: true,
  minify: process.env['TOWERWATCH_PAGE_DEBUG'] === undefined,
  sourcemap: 'linked',
  format: 'esm',
  target: ['chrome110', 'firefox115', 'safari16'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  outdir: join(OUT, 'assets'),
  entryNames: '[name]-[hash]',
  metafile: true,
  absWorkingDir: ROOT,
  logLevel: 'warning',
  legalComments: 'none',
};

export async function buildPage(): Promise<PageBuild> {
  rmSync(OUT, { recursive: true, force: true });
  mkdirSync(join(OUT, 'assets'), { recursive: true });
  const result = await build(options);
  const outputs = Object.keys(result.metafile?.outputs ?? {}).map((p) => join(ROOT, p));
  const asset = (ext: string): string => {
    const found = outputs.find((p) => p.endsWith(ext) && !p.endsWith('.map'));
    if (found === undefined) throw new Error(`esbuild wrote no ${ext} file`);
    return `/assets/${basename(found)}`;
  };
  const html = readFileSync(join(SRC, 'index.html'), 'utf8').replace('%SCRIPT%', asset('.js')).replace('%STYLE%', asset('.css'));
  writeFileSync(join(OUT, 'index.html'), html);

  const sized = (path: string, name: string): PageFile => {
    const body = readFileSync(path);
    return { file: name, bytes: body.length, gzip_bytes: gzipSync(body, { level: 9 }).length };
  };
  const files = [sized(join(OUT, 'index.html'), 'index.html'), ...outputs.filter((p) => !p.endsWith('.map')).map((p) => sized(p, `assets/${basename(p)}`))];
  const report: PageBuild = {
    files,
    total_bytes: files.reduce((s, f) => s + f.bytes, 0),
    total_gzip_bytes: files.reduce((s, f) => s + f.gzip_bytes, 0),
    budget_gzip_bytes: PAGE_BUDGET_GZIP_BYTES,
    built_at: new Date().toISOString(),
  };
  writeFileSync(join(OUT, 'build.json'), `${JSON.stringify(report, null, 2)}\n`);
  return report;
}

const kb = (n: number): string => `${(n / 1024).toFixed(1)} KB`;

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const report = await buildPage();
  for (const f of report.files) process.stdout.write(`page: ${f.file.padEnd(36)} ${kb(f.bytes).padStart(9)}  ${kb(f.gzip_bytes).padStart(9)} gzip\n`);
  process.stdout.write(`page: total ${kb(report.total_bytes)}, ${kb(report.total_gzip_bytes)} gzip (budget ${kb(report.budget_gzip_bytes)})\n`);
  if (report.total_gzip_bytes > report.budget_gzip_bytes) {
    process.stderr.write(`page: over budget by ${kb(report.total_gzip_bytes - report.budget_gzip_bytes)} gzip\n`);
    process.exitCode = 1;
  }
}

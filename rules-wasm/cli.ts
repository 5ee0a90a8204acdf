/**
 * `towerwatch rules check|eval|explain|diff`: how policy authors validate and try policies. The output of
 * `eval` is a contract (one JSON verdict per input line, in order): keep it stable.
 */
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { fail } from '../core/cliSupport.js';
import { compilePolicies, PolicyCompileError, type CompiledPolicySet } from './compiler.js';
import type { EvalEvent } from './event.js';
import { EventLineError, parseEventLine } from './eventInput.js';
import type { NormalizedPolicySet, Verdict } from './model.js';
import { PolicyModule } from './policyModule.js';
import { diffPolicySets, diffText } from './diff.js';
import { explainReference, explanationText } from './explain.js';
import { normalizePolicies, PolicyValidationError } from './language.js';
import { evaluateReference } from './reference.js';

const EVAL_CHUNK = 8192;

interface CommonOptions {
  timezone?: string;
  cache: boolean;
}

export function registerRulesCommands(program: Command): void {
  const rules = program.command('rules').description('Validate, compile and evaluate policy rules (see docs/rules.md)');

  rules
    .command('check')
    .description('Validate a policy file, compile it to WebAssembly, print its module hash and rule count')
    .argument('<policy>', 'POLICY.json: one policy or an array of them')
    .option('--timezone <zone>', "IANA time zone for time windows (default: the policies' own, else UTC)")
    .option('--no-cache', 'do not use the on-disk module cache')
    .option('--show-source', 'print the generated AssemblyScript')
    .action(async (policyPath: string, opts: CommonOptions & { showSource?: boolean }) => {
      const compiled = await compileFile(policyPath, opts);
      if (opts.showSource) process.stdout.write(compiled.source);
      const s = compiled.stats;
      process.stdout.write(
        `ok: ${s.policies} ${plural(s.policies, 'policy', 'policies')}, ${s.rules} ${plural(s.rules, 'rule', 'rules')} ` +
          `(${s.conditionalRules} conditional), module ${compiled.hash}, ${s.wasmBytes} bytes of WASM, ` +
          `${s.cells} decision cells, ${s.cached ? `from the ${s.cached} cache` : 'compiled'} in ${s.compileMs.toFixed(0)} ms\n`,
      );
    });

  rules
    .command('eval')
    .description('Evaluate events against policies; prints one JSON verdict per event line, in order')
    .argument('<policy>', 'POLICY.json: one policy or an array of them')
    .argument('<events>', 'EVENTS.jsonl: one event per line ("-" for standard input)')
    .option('--timezone <zone>', 'IANA time zone for time windows')
    .option('--reference', 'use the TypeScript reference evaluator instead of the WASM module')
    .option('--no-cache', 'do not use the on-disk module cache')
    .action(async (policyPath: string, eventsPath: string, opts: CommonOptions & { reference?: boolean }) => {
      const compiled = await compileFile(policyPath, opts);
      const module = opts.reference ? null : await PolicyModule.instantiate(compiled, EVAL_CHUNK);
      const evaluate = (events: EvalEvent[]): Verdict[] => (module ? module.evaluateEvents(events) : events.map((e) => evaluateReference(compiled.set, e)));
      const input = eventsPath === '-' ? process.stdin : createReadStream(eventsPath);
      let chunk: EvalEvent[] = [];
      const flush = async (): Promise<void> => {
        if (chunk.length === 0) return;
        const out =
          evaluate(chunk)
            .map((v) => JSON.stringify(v))
            .join('\n') + '\n';
        chunk = [];
        if (!process.stdout.write(out)) await new Promise((resolve) => process.stdout.once('drain', resolve));
      };
      let lineNo = 0;
      for await (const line of createInterface({ input, crlfDelay: Infinity })) {
        lineNo++;
        if (line.trim() === '') continue;
        try {
          chunk.push(parseEventLine(line));
        } catch (err) {
          if (err instanceof EventLineError) fail(`${eventsPath}:${lineNo}: ${err.message}`);
          throw err;
        }
        if (chunk.length >= EVAL_CHUNK) await flush();
      }
      await flush();
    });

  rules
    .command('explain')
    .description('Why a verdict: the deciding rule with the tests that held, the candidates it beat and why, the rules that did not match')
    .argument('<policy>', 'POLICY.json: one policy or an array of them')
    .argument('<event>', 'EVENT.json: one event, as a line of EVENTS.jsonl ("-" for standard input)')
    .option('--timezone <zone>', "IANA time zone for time windows (default: the policies' own, else UTC)")
    .option('--json', 'print the explanation as JSON')
    .action(async (policyPath: string, eventPath: string, opts: { timezone?: string; json?: boolean }) => {
      const set = await normalizeFile(policyPath, opts.timezone);
      let event: EvalEvent;
      try {
        event = parseEventLine(JSON.stringify(await readJson(eventPath)));
      } catch (err) {
        if (err instanceof EventLineError) fail(`${eventPath}: ${err.message}`);
        throw err;
      }
      const explanation = explainReference(set, event);
      process.stdout.write(opts.json ? `${JSON.stringify(explanation, null, 2)}\n` : explanationText(explanation));
    });

  rules
    .command('diff')
    .description(
      'What changes from one policy file to another: every decision cell (role × app × action × conditions) whose verdict, severity or remediation changes',
    )
    .argument('<before>', 'POLICY.json as it is')
    .argument('<after>', 'POLICY.json as it would be')
    .option('--timezone <zone>', "IANA time zone for time windows (default: the policies' own, else UTC)")
    .option('--json', 'print the diff as JSON (every changed cell)')
    .option('--limit <n>', 'changed cells to print as text', (v) => Number.parseInt(v, 10), 50)
    .action(async (beforePath: string, afterPath: string, opts: { timezone?: string; json?: boolean; limit: number }) => {
      const [before, after] = await Promise.all([beforePath, afterPath].map((p) => normalizeFile(p, opts.timezone)));
      const diff = diffPolicySets(before!, after!);
      process.stdout.write(opts.json ? `${JSON.stringify(diff, null, 2)}\n` : diffText(diff, opts.limit));
    });
}

async function normalizeFile(path: string, timezone: string | undefined): Promise<NormalizedPolicySet> {
  const json = await readJson(path);
  try {
    return normalizePolicies(json, { timezone });
  } catch (err) {
    if (err instanceof PolicyValidationError) fail(`${path}: ${err.message}`);
    throw err;
  }
}

async function readJson(path: string): Promise<unknown> {
  try {
    const text = path === '-' ? await readStdin() : await readFile(path, 'utf8');
    return JSON.parse(text);
  } catch (err) {
    fail(`${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function compileFile(path: string, opts: CommonOptions): Promise<CompiledPolicySet> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    fail(`${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  try {
    return await compilePolicies(json, { timezone: opts.timezone, cacheDir: opts.cache ? defaultCacheDir() : undefined, label: path });
  } catch (err) {
    if (err instanceof PolicyCompileError) fail(`${path}: ${err.message}`);
    throw err;
  }
}

export function defaultCacheDir(): string {
  return join(process.env['XDG_CACHE_HOME'] ?? join(homedir(), '.cache'), 'towerwatch', 'wasm');
}

function plural(n: number, one: string, many: string): string {
  return n === 1 ? one : many;
}

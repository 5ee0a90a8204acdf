/**
 * Rule-core micro benchmarks: WASM batch evaluation against the reference evaluator on a
 * 100-rule policy set, the cost of encoding events into the columns, and compile times.
 */
import { compilePolicies, PolicyModule, referenceRank, type EvalEvent, type PolicyInput, type RuleInput } from '../rules-wasm/index.js';
import { round, runCases, type BenchRow } from './benchReport.js';

const BATCH = 65_536;
const REFERENCE_BATCH = 10_000;

/** Deterministic pseudo-random numbers so every run measures the same policies and events. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const ROLES = Array.from({ length: 8 }, (_, i) => `role${i}`);
const APPS = Array.from({ length: 40 }, (_, i) => `App ${i}`);
const CATEGORIES = ['messaging', 'social', 'file_sharing', 'streaming', 'productivity', 'ai'];
const ACTIONS = Array.from({ length: 12 }, (_, i) => `Action ${i}`);

/** 100 rules over 4 policies; `conditional` of them carry conditions. */
export function hundredRulePolicies(conditional: number): PolicyInput[] {
  const rnd = lcg(7);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  const rules: RuleInput[] = Array.from({ length: 100 }, (_, i): RuleInput => {
    const target = i % 10 === 0 ? { app_category: pick(CATEGORIES) } : { app_name: pick(APPS) };
    const action = i % 7 === 0 ? {} : { action: pick(ACTIONS) };
    const deny = rnd() < 0.6;
    const when =
      i < conditional
        ? [
            { bytes_up_over: 1_000_000 },
            { time: { from: '09:00', to: '17:00' }, days: ['mon', 'tue', 'wed', 'thu', 'fri'] },
            { os: ['iOS'], os_version_below: '16' },
          ][i % 3]
        : undefined;
    return {
      rule_id: `rule${i}`,
      ...(rnd() < 0.3 ? { role_id: pick(ROLES) } : {}),
      ...target,
      ...action,
      permission: deny ? 'deny' : 'allow',
      ...(deny ? { severity: pick(['low', 'medium', 'high', 'critical'] as const) } : {}),
      ...(when ? { when } : {}),
    };
  });
  return Array.from({ length: 4 }, (_, p) => ({
    policy_id: `policy${p}`,
    name: `Policy ${p}`,
    role_ids: ROLES.slice(p * 2, p * 2 + 3),
    default_permission: p === 3 ? 'deny' : 'allow',
    rules: rules.slice(p * 25, p * 25 + 25),
  }));
}

export function benchEvents(n: number): EvalEvent[] {
  const rnd = lcg(11);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  const start = Date.parse('2026-11-23T00:00:00Z');
  return Array.from({ length: n }, () => ({
    role_ids: rnd() < 0.8 ? [pick(ROLES)] : [pick(ROLES), pick(ROLES)],
    app: pick(APPS),
    app_category: pick(CATEGORIES),
    action: pick(ACTIONS),
    os: rnd() < 0.5 ? 'iOS' : 'Android',
    os_version: pick(['15.2', '16.1', '17.4']),
    ts: start + Math.floor(rnd() * 7 * 86_400_000),
    bytes_up: Math.floor(rnd() * 2_000_000),
    bytes_down: Math.floor(rnd() * 5_000_000),
  }));
}

export interface RulesBenchResult {
  rows: BenchRow[];
  compile: { cold_ms: number[]; cached_ms: number; rules: number; conditional_rules: number; wasm_bytes: number };
  wasm_vs_reference: number;
}

export async function benchRules(timeMs = 1000): Promise<RulesBenchResult> {
  const events = benchEvents(BATCH);
  const plain = await compilePolicies(hundredRulePolicies(0), { label: 'bench 100 rules' });
  const mixed = await compilePolicies(hundredRulePolicies(20), { label: 'bench 100 rules, 20 conditional', timezone: 'America/New_York' });
  const plainModule = await PolicyModule.instantiate(plain, BATCH);
  const mixedModule = await PolicyModule.instantiate(mixed, BATCH);
  for (const m of [plainModule, mixedModule]) {
    const cols = m.columns(BATCH);
    events.forEach((e, i) => m.encoder.encode(cols, i, e));
  }
  const encodeModule = await PolicyModule.instantiate(mixed, BATCH);
  const encodeCols = encodeModule.columns(BATCH);
  const referenceEvents = events.slice(0, REFERENCE_BATCH);

  const rows = await runCases(
    [
      { name: 'wasm evaluate, 100 rules (none conditional)', fn: () => plainModule.run(BATCH), units: BATCH, unit: 'evaluations' },
      { name: 'wasm evaluate, 100 rules (20 conditional)', fn: () => mixedModule.run(BATCH), units: BATCH, unit: 'evaluations' },
      {
        name: 'encode + wasm evaluate, 100 rules (20 conditional)',
        fn: () => {
          for (let i = 0; i < BATCH; i++) encodeModule.encoder.encode(encodeCols, i, events[i] as EvalEvent);
          encodeModule.run(BATCH);
        },
        units: BATCH,
        unit: 'evaluations',
      },
      {
        name: 'reference evaluate, 100 rules (20 conditional)',
        fn: () => {
          for (const e of referenceEvents) referenceRank(mixed.set, e);
        },
        units: REFERENCE_BATCH,
        unit: 'evaluations',
      },
    ],
    timeMs,
  );

  const cold: number[] = [];
  for (let i = 0; i < 3; i++) {
    const c = await compilePolicies(hundredRulePolicies(20), { label: `bench cold compile ${Date.now()} ${i}` });
    cold.push(round(c.stats.compileMs, 1));
  }
  const cached = await compilePolicies(hundredRulePolicies(20), { label: 'bench 100 rules, 20 conditional', timezone: 'America/New_York' });
  const wasmRow = rows[1];
  const refRow = rows[3];
  return {
    rows,
    compile: {
      cold_ms: cold,
      cached_ms: round(cached.stats.compileMs, 1),
      rules: mixed.stats.rules,
      conditional_rules: mixed.stats.conditionalRules,
      wasm_bytes: mixed.stats.wasmBytes,
    },
    wasm_vs_reference: round((wasmRow?.units_per_s ?? 0) / (refRow?.units_per_s ?? 1), 1),
  };
}

/**
 * `npm run bench`: the micro benchmarks (wire codec, rule core). Prints tables and writes
 * bench/results/micro-<time>.json. Figures are reported, never asserted.
 */
import { benchReportTable } from './benchTable.js';
import { writeResults } from './benchReport.js';
import { benchRules } from './rulesBench.js';
import { benchWire } from './wireBench.js';

const timeMs = Number(process.env['BENCH_TIME_MS'] ?? 1000);

const wire = await benchWire();
console.log('\nwire codec');
console.table(benchReportTable(wire));

const rules = await benchRules(timeMs);
console.log('\nrule core (WASM vs reference)');
console.table(benchReportTable(rules.rows));
console.log(`WASM / reference: ${rules.wasm_vs_reference}×`);
console.log(
  `compile, ${rules.compile.rules} rules (${rules.compile.conditional_rules} conditional): cold ${rules.compile.cold_ms.join(', ')} ms; cached ${rules.compile.cached_ms} ms; ${rules.compile.wasm_bytes} bytes of WASM`,
);

const file = await writeResults('micro', { wire, rules });
console.log(`\nresults written to ${file}`);

/**
 * A worker thread for ascHost.test.ts: compiles policies through the process's AscHost, as a
 * pipeline worker does, evaluates one event with the module, and posts what it got.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { compilePolicies } from '../compiler.js';
import { remoteAsc } from '../ascHost.js';
import { PolicyModule } from '../policyModule.js';
import type { EvalEvent } from '../event.js';

const { channel, policies, label, event } = workerData as { channel: string; policies: unknown; label: string; event: EvalEvent };
const compiled = await compilePolicies(policies, { label, compileWasm: remoteAsc(channel) });
const module = await PolicyModule.instantiate(compiled);
parentPort?.postMessage({ hash: compiled.hash, cached: compiled.stats.cached, ruleId: module.evaluateEvents([event])[0]?.rule_id ?? null });

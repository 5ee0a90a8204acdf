/** Public surface of rules-wasm: the rule language, the compiler, the WASM core and the reference evaluator. */
export { compilePolicies, compilePolicySet, PolicyCompileError, COMPILE_ERROR_CODES, ASC_VERSION } from './compiler.js';
export type { CompiledPolicySet, CompileOptions, CompileStats, CompileErrorCode } from './compiler.js';
export { PolicyCompilerService } from './compilerService.js';
export type { PolicyCompilerServiceOptions } from './compilerService.js';
export { normalizePolicies, PolicyValidationError, appKey, conditionsSchema } from './language.js';
export type { PolicyInput, RuleInput, ConditionsInput, PolicyIssue, NormalizeOptions } from './language.js';
export { PolicyModule, EventEncoder, DEFAULT_BATCH_CAPACITY } from './policyModule.js';
export type { BatchColumns } from './policyModule.js';
export { evaluateReference, referenceRank } from './reference.js';
export { parseEventLine, EventLineError } from './eventInput.js';
export { NO_POLICY_VERDICT, verdictOfRank, parseOsVersion } from './model.js';
export type { Verdict, NormalizedPolicySet, NormalizedPolicy, NormalizedRule } from './model.js';
export type { EvalEvent } from './event.js';
export { registerRulesCommands } from './cli.js';
export { enterprisePolicyInputs } from './controlPlanePolicies.js';
export type { EnterprisePolicySource } from './controlPlanePolicies.js';
export { enrichEvent, UNENFORCED_REASONS } from './enrich.js';
export type { Directory, Enrichment, UnenforcedReason } from './enrich.js';

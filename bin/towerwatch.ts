#!/usr/bin/env node
/**
 * The one executable. Each area registers its own subcommands; this file only wires them.
 */
import { Command } from 'commander';
import { registerApiCommands } from '../api/cli.js';
import { registerBenchCommands } from '../bench/cli.js';
import { registerPipelineCommand } from '../pipeline/cli.js';
import { registerRulesCommands } from '../rules-wasm/cli.js';
import { registerSimulateCommands } from '../fixtures/cli.js';
import { registerChaosCommand } from './chaos.js';
import { chaosFuzzers } from './chaosFuzzers.js';
import { registerUpCommand } from './up.js';

const program = new Command()
  .name('towerwatch')
  .description('Carrier app-usage policy enforcement: NATS JetStream → WASM rules → ClickHouse')
  .showHelpAfterError()
  .configureHelp({ sortSubcommands: true });

registerRulesCommands(program);
registerSimulateCommands(program);
registerUpCommand(program);
registerPipelineCommand(program);
registerBenchCommands(program);
registerApiCommands(program);
registerChaosCommand(program, chaosFuzzers);

await program.parseAsync(process.argv);

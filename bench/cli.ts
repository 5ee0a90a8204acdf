/** `towerwatch bench e2e`: the end-to-end benchmark from the command line. */
import { type Command, InvalidArgumentError } from 'commander';
import { spawnSync } from 'node:child_process';
import { fail, integerOption, numberOption } from '../core/cliSupport.js';

const hasWrk = (): boolean => spawnSync('wrk', ['--version']).error === undefined;
import { runApiBench } from './apiBench.js';
import { runCompareCli } from './compare.js';
import { DEFAULT_WARMUP_SECONDS, runE2eCli } from './e2e.js';
import { DEFAULT_PREVIEW_EVENTS, DEFAULT_PREVIEW_TEMPLATES, runPreviewBench } from './previewBench.js';
import { DEFAULT_LIMITS_CPU_MS, DEFAULT_LIMITS_EVENTS, DEFAULT_LIMITS_FRAME_SIZE, runLimitsCli } from './limits.js';

export function registerBenchCommands(program: Command): void {
  const bench = program.command('bench').description('Benchmarks (results in bench/results/)');
  bench
    .command('e2e')
    .description('nats-server + pipeline + embedded ClickHouse fed by the simulator: events/s, publish→alert latency, RSS, CPU')
    .option('--events <n>', 'events to publish', integerOption('--events'), 1_000_000)
    .option('--rate <events/s>', 'publish rate (0: as fast as the simulator can)', integerOption('--rate', true), 0)
    .option('--frame-size <n>', 'events per frame', integerOption('--frame-size'), 1000)
    .option('--threads <n>', 'pipeline worker threads (default: the cores available)', integerOption('--threads'))
    .option('--prefill', 'publish everything first, then time the pipeline draining the stream alone')
    .option(
      '--warmup <seconds>',
      'alerts within this long of the first one are reported apart (warmup_latency_ms), not in the percentiles',
      numberOption('--warmup', true),
      DEFAULT_WARMUP_SECONDS,
    )
    .option('--limit <events/s>', "the machine's limit to compare with (default: the newest bench/results/limits-*.json)", integerOption('--limit'))
    .option('--cluster <n>', 'run on a JetStream cluster of n nats-servers (streams R3 from 3), ClickHouse over HTTP', integerOption('--cluster'))
    .option('--pipelines <p>', 'with --cluster: pipeline processes sharing the consumer', integerOption('--pipelines'), 2)
    .option('--kill-leader', "with --cluster: SIGKILL the USAGE stream's leader a third of the way in")
    .option('--json', 'print one JSON object')
    .action(
      async (opts: {
        events: number;
        rate: number;
        frameSize: number;
        threads?: number;
        prefill?: boolean;
        warmup: number;
        limit?: number;
        json?: boolean;
        cluster?: number;
        pipelines: number;
        killLeader?: boolean;
      }) => {
        if (opts.cluster === undefined && opts.killLeader) fail('--kill-leader needs --cluster');
        const result = await runE2eCli({
          cluster: opts.cluster === undefined ? undefined : { nodes: opts.cluster, pipelines: opts.pipelines, killLeader: opts.killLeader ?? false },
          events: opts.events,
          rate: opts.rate,
          frameSize: opts.frameSize,
          threads: opts.threads,
          prefill: opts.prefill ?? false,
          warmupSeconds: opts.warmup,
          limit: opts.limit,
          json: opts.json ?? false,
          log: (line) => process.stderr.write(`${line}\n`),
        });
        if (!result.ok) process.exitCode = 1;
      },
    );
  bench
    .command('limits')
    .description(
      'what each stage can do alone on this machine (JetStream, decode + WASM, row encoding, ClickHouse insert): the limit `bench e2e` is compared with',
    )
    .option('--events <n>', 'events in the frames every stage handles', integerOption('--events'), DEFAULT_LIMITS_EVENTS)
    .option('--frame-size <n>', 'events per frame', integerOption('--frame-size'), DEFAULT_LIMITS_FRAME_SIZE)
    .option('--cpu-ms <ms>', 'measuring time of each CPU-bound stage', integerOption('--cpu-ms'), DEFAULT_LIMITS_CPU_MS)
    .option('--results-dir <dir>', 'where the JSON goes (default: bench/results/)')
    .option('--json', 'print one JSON object')
    .action(async (opts: { events: number; frameSize: number; cpuMs: number; resultsDir?: string; json?: boolean }) => {
      await runLimitsCli({ ...opts, json: opts.json ?? false, log: (line) => process.stderr.write(`${line}\n`) });
    });
  bench
    .command('preview')
    .description("a policy preview over stored events of the simulated world's busiest enterprise, beside the engine's own scan of the window")
    .option('--events <n>', 'events stored in ClickHouse, all in the week previewed', integerOption('--events'), DEFAULT_PREVIEW_EVENTS)
    .option('--templates <n>', 'distinct world events the stored ones are copies of', integerOption('--templates'), DEFAULT_PREVIEW_TEMPLATES)
    .action(async (opts: { events: number; templates: number }) => {
      const result = await runPreviewBench({ ...opts, log: (line) => process.stderr.write(`${line}\n`) });
      process.stdout.write(`${JSON.stringify(result)}\n`);
    });
  bench
    .command('api')
    .description('the api under load: cached GET and /dashboard/metrics with autocannon, alert fan-out to WebSocket clients')
    .option('--events <n>', 'events stored in ClickHouse before the load', integerOption('--events'), 10_000_000)
    .option('--duration <s>', 'seconds per HTTP run', integerOption('--duration'), 10)
    .option('--connections <n>', 'concurrent HTTP connections', integerOption('--connections'), 50)
    .option('--sockets <n>', 'WebSocket clients for the fan-out', integerOption('--sockets'), 1000)
    .option('--alerts <n>', 'alerts published for the fan-out', integerOption('--alerts'), 3000)
    .option('--client <wrk|autocannon>', 'HTTP load generator (default: wrk when installed, it is lighter than a Node client)')
    .option('--alert-rate <n/s>', 'alerts per second for the fan-out (each goes to every socket)', integerOption('--alert-rate'), 100)
    .option(
      '--ingest-rate <events/s>',
      'events/s the simulator publishes through a pipeline while /dashboard/alerts is measured once more (0: skip)',
      integerOption('--ingest-rate', true),
      20_000,
    )
    .action(
      async (opts: {
        events: number;
        duration: number;
        connections: number;
        sockets: number;
        alerts: number;
        alertRate: number;
        ingestRate: number;
        client?: string;
      }) => {
        const client = opts.client ?? (hasWrk() ? 'wrk' : 'autocannon');
        if (client !== 'wrk' && client !== 'autocannon') throw new InvalidArgumentError(`--client must be wrk or autocannon, got '${client}'`);
        const result = await runApiBench({ ...opts, client, durationS: opts.duration, log: (line) => process.stderr.write(`${line}\n`) });
        process.stdout.write(`${JSON.stringify(result)}\n`);
      },
    );
  bench
    .command('compare')
    .description('the newest limits, e2e and api results beside the committed baseline (bench/baseline/), as ratios; reported, never asserted')
    .option('--baseline <dir>', 'folder of limits.json, e2e.json and api.json (default: bench/baseline/)')
    .option('--results <dir>', 'folder of the runs to compare (default: bench/results/)')
    .option('--json', 'print the rows as JSON')
    .action(async (opts: { baseline?: string; results?: string; json?: boolean }) => {
      await runCompareCli({ baselineDir: opts.baseline, resultsDir: opts.results, json: opts.json ?? false });
    });
}

/**
 * The load side of `bench api`, in its own process so that it does not share the server's
 * event loop: autocannon for HTTP, or N WebSocket clients measuring alert delivery.
 * Reads one JSON job from argv[2], prints one JSON result on stdout.
 */
import { execFileSync } from 'node:child_process';
import autocannon from 'autocannon';
import WebSocket from 'ws';

interface HttpJob {
  kind: 'http';
  client: 'wrk' | 'autocannon';
  url: string;
  headers: Record<string, string>;
  connections: number;
  durationS: number;
  /** @default 'GET' */
  method?: 'GET' | 'POST';
  /** A JSON body (sent with content-type application/json). */
  body?: string;
}
interface WsJob {
  kind: 'ws';
  url: string;
  sockets: number;
}
type Job = HttpJob | WsJob;

const job = JSON.parse(process.argv[2] ?? '{}') as Job;

/** "1.23ms" → 1.23 */
function ms(text: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(text.trim());
  if (m === null) return NaN;
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v;
}

// wrk needs a script for a body: requests with one go through autocannon.
if (job.kind === 'http' && job.client === 'wrk' && job.body === undefined) {
  // wrk (C, from Debian) loads the server harder than a Node client can on the same 2 cores.
  const args = [`-t${Math.min(2, job.connections)}`, `-c${job.connections}`, `-d${job.durationS}s`, '--latency'];
  for (const [k, v] of Object.entries(job.headers)) args.push('-H', `${k}: ${v}`);
  const out = execFileSync('wrk', [...args, job.url], { encoding: 'utf8' });
  const pct = (p: string): number => ms(new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(out)?.[1] ?? '');
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  process.stdout.write(
    `${JSON.stringify({ client: 'wrk', requests_per_s: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]), latency_ms: { p50: pct('50'), p90: pct('90'), p99: pct('99') }, total: Number(/(\d+) requests in/.exec(out)?.[1]), non2xx_or_3xx: non2xx })}\n`,
  );
} else if (job.kind === 'http') {
  const body = job.body === undefined ? {} : { method: job.method ?? 'POST', body: job.body, headers: { ...job.headers, 'content-type': 'application/json' } };
  const r = await autocannon({ url: job.url, headers: job.headers, connections: job.connections, duration: job.durationS, pipelining: 1, ...body });
  const statuses: Record<string, number> = {};
  for (const k of ['1xx', '2xx', '3xx', '4xx', '5xx'] as const) statuses[k] = r[k];
  process.stdout.write(
    `${JSON.stringify({ client: 'autocannon', requests_per_s: r.requests.average, latency_ms: { p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, max: r.latency.max }, total: r.requests.total, errors: r.errors, timeouts: r.timeouts, non2xx: r.non2xx, statuses })}\n`,
  );
} else {
  // Sockets connect, then the parent publishes; each alert carries its publish time in `timestamp`.
  const latencies: number[] = [];
  let received = 0;
  let first = 0;
  let last = 0;
  const sockets: WebSocket[] = [];
  await Promise.all(
    Array.from(
      { length: job.sockets },
      () =>
        new Promise<void>((resolve, reject) => {
          const ws = new WebSocket(job.url);
          sockets.push(ws);
          ws.on('message', (data) => {
            const m = JSON.parse(data.toString()) as { type: string; timestamp?: string };
            if (m.type === 'subscribed') return resolve();
            if (m.type !== 'alert' || m.timestamp === undefined) return;
            const now = Date.now();
            if (received === 0) first = now;
            last = now;
            received++;
            if (received % 10 === 0) latencies.push(now - Date.parse(m.timestamp));
          });
          ws.on('error', reject);
        }),
    ),
  );
  process.stdout.write('ready\n');
  // The parent says how many it published and waits for our numbers.
  process.stdin.setEncoding('utf8');
  let input = '';
  for await (const chunk of process.stdin) {
    input += chunk;
    if (input.includes('\n')) break;
  }
  const expected = Number(input.trim());
  const deadline = Date.now() + 30_000;
  while (received < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  latencies.sort((a, b) => a - b);
  const q = (p: number): number => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  process.stdout.write(
    `${JSON.stringify({ expected, received, deliveries_per_s: received / Math.max(0.001, (last - first) / 1000), latency_ms: { p50: q(0.5), p99: q(0.99), max: latencies.at(-1) ?? NaN } })}\n`,
  );
  for (const ws of sockets) ws.terminate();
}

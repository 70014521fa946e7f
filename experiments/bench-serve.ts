// `npm run bench:serve [-- --seconds 4 --model DIR]`: a load generator over
// loopback against a real `crowdfl serve` process serving the 2NN (MNIST,
// 784 → 200 → 200 → 10). Closed-loop phases at concurrency 1, 16 and 64 with
// batching on (--max-batch 64 --max-wait-ms 2) and off (--max-batch 1) give
// req/s and p50/p99 latency; then an open-loop phase offers twice the best
// sustained rate against a bounded queue and reports the 429 share, the
// slowest answer and the server's RSS. Each request carries one instance.
// Without --model the checkpoint holds the 2NN's initial weights: inference
// costs the same whatever the weights are.
import { spawn, type ChildProcess } from 'node:child_process';
import { Agent, request } from 'node:http';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { writeCheckpoint } from '../aggregator/store/checkpoints.js';
import { initBackend } from '../core/backend.js';
import { initialWeights, weightManifest } from '../core/model.js';
import { modelSpec } from '../core/model-zoo.js';
import { ServingMetrics } from '../serving/metrics.js';
import { ModelRegistry } from '../serving/registry.js';
import { latencySummary, rssMb } from './light-nodes.js';
import { markdownTable } from './markdown.js';

const CLI = fileURLToPath(new URL('../cli/index.js', import.meta.url));
const CONCURRENCIES = [1, 16, 64];
const TARGET_SPEEDUP = 5;
const OVERLOAD_QUEUE = 256;
const DEADLINE_MS = 2000;

interface Server {
  child: ChildProcess;
  port: number;
}

function startServer(checkpoint: string, args: string[]): Promise<Server> {
  const child = spawn(process.execPath, [CLI, 'serve', '--model', checkpoint, '--port', '0', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stderr! });
    lines.on('line', (line) => {
      const port = /listening on http:\/\/[^:]+:(\d+)/.exec(line)?.[1];
      if (port) resolve({ child, port: Number(port) });
    });
    child.once('exit', (code) => reject(new Error(`crowdfl serve exited with ${code} before listening`)));
  });
}

function stopServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.child.once('exit', () => resolve());
    server.child.kill('SIGTERM');
  });
}

interface Answer {
  status: number;
  ms: number;
}

/** One predict call; status 0 means no answer within DEADLINE_MS (or a broken connection). */
function predict(agent: Agent, port: number, body: Buffer): Promise<Answer> {
  const started = performance.now();
  return new Promise((resolve) => {
    const req = request(
      { agent, host: '127.0.0.1', port, method: 'POST', path: '/v1/models/default:predict', headers: { 'content-type': 'application/json', 'content-length': body.length }, timeout: DEADLINE_MS },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - started }));
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve({ status: 0, ms: performance.now() - started }));
    req.end(body);
  });
}

interface PhaseResult {
  answers: Answer[];
  seconds: number;
}

/** `concurrency` clients, each sending its next request as soon as the last is answered. */
async function closedLoop(port: number, body: Buffer, concurrency: number, seconds: number): Promise<PhaseResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const answers: Answer[] = [];
  const started = performance.now();
  const end = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) answers.push(await predict(agent, port, body));
    }),
  );
  agent.destroy();
  return { answers, seconds: (performance.now() - started) / 1000 };
}

/** Requests at a fixed rate regardless of answers (an open loop), as real overload arrives. */
async function openLoop(port: number, body: Buffer, ratePerSecond: number, seconds: number, onTick: () => void): Promise<PhaseResult> {
  // A request waiting for one of these sockets waits in the client, where the server cannot refuse it; that time counts in its latency.
  const agent = new Agent({ keepAlive: true, maxSockets: 1024 });
  const pending: Promise<Answer>[] = [];
  const started = performance.now();
  const total = Math.round(ratePerSecond * seconds);
  for (let sent = 0; sent < total; ) {
    const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * ratePerSecond));
    for (; sent < due; sent++) pending.push(predict(agent, port, body));
    onTick();
    await new Promise((r) => setTimeout(r, 5));
  }
  const answers = await Promise.all(pending);
  agent.destroy();
  return { answers, seconds: (performance.now() - started) / 1000 };
}

function rate(phase: PhaseResult): number {
  return phase.answers.filter((a) => a.status === 200).length / phase.seconds;
}

/**
 * Instances per second through the model alone (registry and batcher, no HTTP,
 * no JSON) at batch sizes 1 and 64: the most batching can gain, for comparison
 * with what it gains end to end.
 */
async function inferenceOnly(checkpoint: string, instance: readonly number[], seconds: number): Promise<Map<number, number>> {
  await initBackend('auto', { log: () => undefined });
  const registry = new ModelRegistry({ batching: { maxBatch: 64, maxWaitMs: 0, maxQueue: 64 }, keepVersions: 1 }, new ServingMetrics());
  const served = await registry.load('bench', 1, checkpoint);
  const perSecond = new Map<number, number>();
  for (const batch of [1, 64]) {
    const rows = Array.from({ length: batch }, () => Float32Array.from(instance));
    const started = performance.now();
    let done = 0;
    while (performance.now() - started < seconds * 1000) {
      await served.predict(rows);
      done += batch;
    }
    perSecond.set(batch, done / ((performance.now() - started) / 1000));
  }
  await registry.close();
  return perSecond;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { seconds: { type: 'string', default: '4' }, model: { type: 'string' } } });
  const seconds = Number(values.seconds);
  let checkpoint = values.model;
  if (!checkpoint) {
    const spec = modelSpec('2nn', { featureShape: [28, 28, 1], numClasses: 10 });
    checkpoint = writeCheckpoint(mkdtempSync(join(tmpdir(), 'crowdfl-bench-serve-')), 'round-0001', spec.topology, weightManifest(spec), initialWeights(spec, 1)).dir;
  }
  // One MNIST-sized instance of pixel intensities in [0, 1], serialised once.
  const instance = Array.from({ length: 784 }, (_, i) => ((i * 37) % 256) / 255);
  const body = Buffer.from(JSON.stringify({ instances: [instance] }));
  process.stdout.write(`bench:serve — 2NN over loopback, ${seconds} s per phase, one instance per request, checkpoint ${checkpoint}\n\n`);
  const modelOnly = await inferenceOnly(checkpoint, instance, seconds / 2);
  process.stdout.write(
    `model alone (no HTTP): ${modelOnly.get(1)!.toFixed(0)} instances/s at batch 1, ${modelOnly.get(64)!.toFixed(0)} at batch 64 ` +
      `(${(modelOnly.get(64)! / modelOnly.get(1)!).toFixed(1)}×); the HTTP request body is ${body.length} bytes of JSON\n\n`,
  );

  const modes = [
    { label: 'batching on (max batch 64, max wait 2 ms)', args: ['--max-batch', '64', '--max-wait-ms', '2'] },
    { label: 'batching off (max batch 1)', args: ['--max-batch', '1', '--max-wait-ms', '0'] },
  ];
  const rates = new Map<string, number>();
  const rows: string[][] = [];
  for (const mode of modes) {
    const server = await startServer(checkpoint, mode.args);
    try {
      await closedLoop(server.port, body, 16, 1); // warm-up: JIT, wasm, first batches
      for (const concurrency of CONCURRENCIES) {
        const phase = await closedLoop(server.port, body, concurrency, seconds);
        const ok = phase.answers.filter((a) => a.status === 200);
        const latency = latencySummary(ok.map((a) => a.ms));
        rates.set(`${mode.args[1]}/${concurrency}`, rate(phase));
        rows.push([mode.label, String(concurrency), rate(phase).toFixed(0), latency.p50.toFixed(2), latency.p99.toFixed(2), String(phase.answers.length - ok.length)]);
      }
    } finally {
      await stopServer(server);
    }
  }
  process.stdout.write(`${markdownTable(['server', 'concurrency', 'req/s', 'p50 ms', 'p99 ms', 'failed'], rows, [1, 2, 3, 4, 5]).join('\n')}\n\n`);
  const speedup = (rates.get('64/64') ?? 0) / (rates.get('1/64') ?? Number.NaN);
  process.stdout.write(`batching speed-up at concurrency 64: ${speedup.toFixed(1)}× (target ≥ ${TARGET_SPEEDUP}×: ${speedup >= TARGET_SPEEDUP ? 'met' : 'NOT met'})\n\n`);

  // Overload: twice the best sustained rate, against at most OVERLOAD_QUEUE requests in progress.
  const sustainable = Math.max(...rates.values());
  const offered = 2 * sustainable;
  const server = await startServer(checkpoint, ['--max-batch', '64', '--max-wait-ms', '2', '--max-queue', String(OVERLOAD_QUEUE), '--max-pending', String(OVERLOAD_QUEUE)]);
  try {
    await closedLoop(server.port, body, 16, 1);
    const rssBefore = rssMb(server.child.pid!) ?? Number.NaN;
    let rssMax = rssBefore;
    // The generator shares the machine's two cores with the server; its own event-loop lag shows how late it sent and read.
    const lag = monitorEventLoopDelay({ resolution: 10 });
    lag.enable();
    const phase = await openLoop(server.port, body, offered, seconds * 2, () => {
      rssMax = Math.max(rssMax, rssMb(server.child.pid!) ?? 0);
    });
    lag.disable();
    const count = (status: number): number => phase.answers.filter((a) => a.status === status).length;
    const n = phase.answers.length;
    const all = latencySummary(phase.answers.map((a) => a.ms));
    const answered = latencySummary(phase.answers.filter((a) => a.status === 200).map((a) => a.ms));
    process.stdout.write(
      `overload: offered ${offered.toFixed(0)} req/s (2× ${sustainable.toFixed(0)}) for ${(seconds * 2).toFixed(0)} s, --max-queue/--max-pending ${OVERLOAD_QUEUE}, deadline ${DEADLINE_MS} ms\n` +
        `  ${n} requests: ${count(200)} answered (${((100 * count(200)) / n).toFixed(1)}%), ${count(429)} refused 429 (${((100 * count(429)) / n).toFixed(1)}%), ` +
        `${n - count(200) - count(429)} other/no answer within the deadline\n` +
        `  answered at ${rate(phase).toFixed(0)} req/s; latency of 200s p50 ${answered.p50.toFixed(1)} ms, p99 ${answered.p99.toFixed(1)} ms; slowest answer of any kind ${all.max.toFixed(1)} ms\n` +
        `  server RSS ${rssBefore.toFixed(0)} MB before, at most ${rssMax.toFixed(0)} MB during; load generator event-loop lag p99 ${(lag.percentile(99) / 1e6).toFixed(0)} ms, max ${(lag.max / 1e6).toFixed(0)} ms\n`,
    );
  } finally {
    await stopServer(server);
  }
}

await main();

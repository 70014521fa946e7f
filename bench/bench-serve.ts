// `npm run bench:serve [-- --seconds 4 --model DIR]`: a load generator over
// loopback against a real `crowdfl serve` process serving the 2NN (MNIST,
// 784 → 200 → 200 → 10), over HTTP (TF Serving REST, JSON) and gRPC (TF
// Serving Predict, tensor_content). Closed-loop phases at concurrency 1, 16
// and 64 with batching on (--max-batch 64) and off (--max-batch 1) give req/s
// and p50/p99 latency; then, per protocol, an open-loop phase offers twice the
// best sustained rate with a 2 s client deadline and counts answers, refusals
// (429 / RESOURCE_EXHAUSTED) and requests with no answer within the deadline,
// and the server's RSS. Each request carries one instance. The clients send
// prebuilt bytes (raw-clients.ts; gRPC as raw HTTP/2 frames) so the generator costs the shared CPU little.
// Without --model the checkpoint holds the 2NN's initial weights: inference
// costs the same whatever the weights are.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as protoLoader from '@grpc/proto-loader';
import { writeCheckpoint } from '../aggregator/store/checkpoints.js';
import { initBackend } from '../core/backend.js';
import { initialWeights } from '../core/model/build.js';
import { weightManifest } from '../core/model/spec.js';
import { modelSpec } from '../core/model/zoo.js';
import { LOADER_OPTIONS } from '../core/proto.js';
import type { PredictRequest } from '../proto/generated/tensorflow/serving/PredictRequest.js';
import { SERVING_PROTO_PATH } from '../serving/grpc.js';
import { ServingMetrics } from '../serving/metrics.js';
import { ModelRegistry } from '../serving/registry.js';
import { latencySummary, rssMb } from './light-nodes.js';
import { markdownTable } from '../lab/markdown.js';
import { rawH2GrpcClient, rawHttpClient, type Answer, type Client } from './raw-clients.js';

const CLI = fileURLToPath(new URL('../cli/index.js', import.meta.url));
const CONCURRENCIES = [1, 16, 64];
const TARGET_SPEEDUP = 5;
const DEADLINE_MS = 2000;

type Protocol = 'http' | 'grpc';

interface Server {
  child: ChildProcess;
  httpPort: number;
  grpcPort: number;
}

function startServer(checkpoint: string, args: string[]): Promise<Server> {
  const child = spawn(process.execPath, [CLI, 'serve', '--model', checkpoint, '--port', '0', '--grpc-port', '0', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  return new Promise((resolve, reject) => {
    let grpcPort = 0;
    const lines = createInterface({ input: child.stderr! });
    lines.on('line', (line) => {
      const g = /gRPC PredictionService listening on [^:]+:(\d+)/.exec(line)?.[1];
      if (g) grpcPort = Number(g);
      const port = /listening on http:\/\/[^:]+:(\d+)/.exec(line)?.[1];
      if (port) resolve({ child, httpPort: Number(port), grpcPort });
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

interface PhaseResult {
  answers: Answer[];
  seconds: number;
}

/** `concurrency` clients, each sending its next request as soon as the last is answered. */
async function closedLoop(client: Client, concurrency: number, seconds: number): Promise<PhaseResult> {
  const answers: Answer[] = [];
  const started = performance.now();
  const end = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) answers.push(await client.predict());
    }),
  );
  return { answers, seconds: (performance.now() - started) / 1000 };
}

/** Requests at a fixed rate regardless of answers (an open loop), as real overload arrives. */
async function openLoop(client: Client, ratePerSecond: number, seconds: number, onTick: () => void): Promise<PhaseResult> {
  const pending: Promise<Answer>[] = [];
  const started = performance.now();
  const total = Math.round(ratePerSecond * seconds);
  for (let sent = 0; sent < total; ) {
    const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * ratePerSecond));
    for (; sent < due; sent++) pending.push(client.predict());
    onTick();
    await new Promise((r) => setTimeout(r, 5));
  }
  const answers = await Promise.all(pending);
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

/** CPU seconds (user + system) process `pid` has used, from /proc. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function load(): string {
  return loadavg()
    .map((l) => l.toFixed(2))
    .join(' / ');
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { seconds: { type: 'string', default: '4' }, model: { type: 'string' }, 'overload-factor': { type: 'string', default: '2' } } });
  const factor = Number(values['overload-factor']);
  const seconds = Number(values.seconds);
  let checkpoint = values.model;
  if (!checkpoint) {
    const spec = modelSpec('2nn', { featureShape: [28, 28, 1], numClasses: 10 });
    checkpoint = writeCheckpoint(mkdtempSync(join(tmpdir(), 'crowdfl-bench-serve-')), 'round-0001', spec.topology, weightManifest(spec), initialWeights(spec, 1)).dir;
  }
  // One MNIST-sized instance of pixel intensities in [0, 1], encoded once per protocol.
  const instance = Array.from({ length: 784 }, (_, i) => ((i * 37) % 256) / 255);
  const body = Buffer.from(JSON.stringify({ instances: [instance] }));
  const message: PredictRequest = {
    model_spec: { name: 'default' },
    inputs: { x: { dtype: 'DT_FLOAT', tensor_shape: { dim: [{ size: 1 }, { size: 784 }] }, tensor_content: Buffer.from(Float32Array.from(instance).buffer) } },
  };
  // Serialized once with the same definition the server decodes with.
  const predictMethod = protoLoader.loadSync(SERVING_PROTO_PATH, LOADER_OPTIONS)['tensorflow.serving.PredictionService'] as protoLoader.ServiceDefinition;
  const serialized = predictMethod.Predict.requestSerialize(message);
  const makeClient = (protocol: Protocol, server: Server, connections: number): Client =>
    protocol === 'http'
      ? rawHttpClient(server.httpPort, '/v1/models/default:predict', body, connections, DEADLINE_MS)
      : // Raw HTTP/2 frames (node:http2's client cost ~2.5× more CPU per call, starving the server it shares the machine with),
        // one connection per 64 concurrent calls (the closed-loop phases use one; the overload phase 16): thousands of
        // streams on one connection collapsed it (resets and GOAWAYs with the server mostly idle), as many clients would not.
        rawH2GrpcClient(server.grpcPort, '/tensorflow.serving.PredictionService/Predict', serialized, DEADLINE_MS, Math.ceil(connections / 64));
  process.stdout.write(`bench:serve — 2NN over loopback, ${seconds} s per phase, one instance per request, checkpoint ${checkpoint}\n`);
  process.stdout.write(`load average (1/5/15 min) at start: ${load()}\n\n`);
  const modelOnly = await inferenceOnly(checkpoint, instance, seconds / 2);
  process.stdout.write(
    `model alone (no HTTP): ${modelOnly.get(1)!.toFixed(0)} instances/s at batch 1, ${modelOnly.get(64)!.toFixed(0)} at batch 64 ` +
      `(${(modelOnly.get(64)! / modelOnly.get(1)!).toFixed(1)}×); a request is ${body.length} bytes of JSON over HTTP, ${784 * 4} bytes of tensor_content over gRPC\n\n`,
  );

  const modes = [
    { key: 'on', label: 'batching on (max batch 64, max wait 2 ms)', args: ['--max-batch', '64', '--max-wait-ms', '2'] },
    { key: 'off', label: 'batching off (max batch 1)', args: ['--max-batch', '1', '--max-wait-ms', '0'] },
  ];
  const protocols: Protocol[] = ['http', 'grpc'];
  const rates = new Map<string, number>();
  const rows: string[][] = [];
  for (const mode of modes) {
    // Closed-loop phases measure throughput, not refusal: a budget no phase reaches.
    const server = await startServer(checkpoint, [...mode.args, '--max-delay-ms', '60000', '--max-utilization', '1']);
    try {
      for (const protocol of protocols) {
        const warm = makeClient(protocol, server, 16);
        await closedLoop(warm, 16, 1); // warm-up: JIT, wasm, first batches
        warm.close();
        for (const concurrency of CONCURRENCIES) {
          const client = makeClient(protocol, server, concurrency);
          const phase = await closedLoop(client, concurrency, seconds);
          client.close();
          const ok = phase.answers.filter((a) => a.status === 200);
          const latency = latencySummary(ok.map((a) => a.ms));
          rates.set(`${protocol}/${mode.key}/${concurrency}`, rate(phase));
          rows.push([protocol, mode.label, String(concurrency), rate(phase).toFixed(0), latency.p50.toFixed(2), latency.p99.toFixed(2), String(phase.answers.length - ok.length)]);
        }
      }
    } finally {
      await stopServer(server);
    }
  }
  process.stdout.write(`${markdownTable(['api', 'server', 'concurrency', 'req/s', 'p50 ms', 'p99 ms', 'failed'], rows, [2, 3, 4, 5, 6]).join('\n')}\n\n`);
  for (const protocol of protocols) {
    const speedup = (rates.get(`${protocol}/on/64`) ?? 0) / (rates.get(`${protocol}/off/64`) ?? Number.NaN);
    process.stdout.write(`${protocol}: batching speed-up at concurrency 64: ${speedup.toFixed(1)}× (target ≥ ${TARGET_SPEEDUP}×: ${speedup >= TARGET_SPEEDUP ? 'MET' : 'MISSED'})\n`);
  }
  process.stdout.write(`load average after the closed-loop phases: ${load()}\n\n`);

  // Overload: twice (--overload-factor) the best sustained rate of each protocol, with the server's default admission (--max-delay-ms 100, --max-utilization 0.9).
  for (const protocol of protocols) {
    const sustainable = Math.max(rates.get(`${protocol}/on/64`) ?? 0, rates.get(`${protocol}/on/16`) ?? 0);
    const offered = factor * sustainable;
    const server = await startServer(checkpoint, ['--max-batch', '64', '--max-wait-ms', '2']);
    try {
      const warm = makeClient(protocol, server, 16);
      await closedLoop(warm, 16, 1);
      warm.close();
      const rssBefore = rssMb(server.child.pid!) ?? Number.NaN;
      const cpuBefore = cpuSeconds(server.child.pid!);
      let rssMax = rssBefore;
      // The generator shares the machine's two cores with the server; its own event-loop lag shows how late it sent and read.
      const lag = monitorEventLoopDelay({ resolution: 10 });
      lag.enable();
      const generatorBefore = process.cpuUsage();
      const client = makeClient(protocol, server, 1024);
      const phase = await openLoop(client, offered, seconds * 2, () => {
        rssMax = Math.max(rssMax, rssMb(server.child.pid!) ?? 0);
      });
      client.close();
      lag.disable();
      const cpuShare = (cpuSeconds(server.child.pid!) - cpuBefore) / phase.seconds;
      const generatorUsage = process.cpuUsage(generatorBefore);
      const generatorShare = (generatorUsage.user + generatorUsage.system) / 1e6 / phase.seconds;
      const count = (status: number): number => phase.answers.filter((a) => a.status === status).length;
      const n = phase.answers.length;
      const unanswered = phase.answers.filter((a) => a.status === 0 || a.ms > DEADLINE_MS).length;
      // gRPC: UNAVAILABLE (a REFUSED_STREAM reset, or the status) is a clear refusal too; grpc-js retries a refused stream once by itself.
      const unavailable = protocol === 'grpc' ? count(503) : 0;
      const resets = phase.answers.filter((a) => a.reset !== undefined).length;
      const other = n - count(200) - count(429) - unavailable - count(0);
      const all = latencySummary(phase.answers.filter((a) => a.status !== 0).map((a) => a.ms));
      const answered = latencySummary(phase.answers.filter((a) => a.status === 200).map((a) => a.ms));
      const refusals = latencySummary(phase.answers.filter((a) => a.status === 429 || (protocol === 'grpc' && a.status === 503)).map((a) => a.ms));
      const met = unanswered === 0 && other === 0;
      process.stdout.write(
        `${protocol} overload: offered ${offered.toFixed(0)} req/s (${factor}× ${sustainable.toFixed(0)}) for ${(seconds * 2).toFixed(0)} s, client deadline ${DEADLINE_MS} ms, server defaults (--max-delay-ms 100, --max-utilization 0.9)\n` +
          `  ${n} requests: ${count(200)} answered (${((100 * count(200)) / n).toFixed(1)}%), ${count(429)} refused ${protocol === 'http' ? '429' : 'RESOURCE_EXHAUSTED'} (${((100 * count(429)) / n).toFixed(1)}%), ` +
          `${protocol === 'grpc' ? `${unavailable} refused UNAVAILABLE, ${resets} of the refusals as HTTP/2 stream resets, ` : ''}${unanswered} with no answer within the deadline, ${other} other errors\n` +
          `  answered at ${rate(phase).toFixed(0)} req/s; latency of answers p50 ${answered.p50.toFixed(1)} ms, p99 ${answered.p99.toFixed(1)} ms; of refusals p50 ${refusals.p50.toFixed(1)} ms, p99 ${refusals.p99.toFixed(1)} ms; slowest reply of any kind ${all.max.toFixed(1)} ms\n` +
          `  server RSS ${rssBefore.toFixed(0)} MB before, at most ${rssMax.toFixed(0)} MB during; server CPU ${(100 * cpuShare).toFixed(0)}% of one core; load generator CPU ${(100 * generatorShare).toFixed(0)}% of one core, event-loop lag p99 ${(lag.percentile(99) / 1e6).toFixed(0)} ms, max ${(lag.max / 1e6).toFixed(0)} ms\n` +
          `  target (every request answered or refused within the deadline, memory bounded): ${met ? 'MET' : 'MISSED'}; goodput ${((100 * rate(phase)) / sustainable).toFixed(0)}% of the sustained rate\n`,
      );
    } finally {
      await stopServer(server);
    }
  }
  process.stdout.write(`load average at the end: ${load()}\n`);
}

await main();

import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { backendPreferenceSchema, type BackendPreference } from '../core/backend.js';
import { initBackend } from '../core/backend.js';
import { ServingLoadError } from '../serving/registry.js';
import { startServing, type ModelSource } from '../serving/serve.js';
import { action, UsageError } from './errors.js';
import { parseChoice, parsePort } from './options.js';
import { resolveRun } from './runs.js';
import { lineLog, logFormatSchema, type LogFormat } from '../core/log.js';

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive whole number');
  return n;
}

function nonNegative(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError('expected a number of at least 0');
  return n;
}

function utilization(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !(n > 0 && n <= 1)) throw new InvalidArgumentError('expected a fraction above 0 and at most 1');
  return n;
}

/** `[NAME=]PATH`, repeatable: several models side by side. */
function collectSource(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function splitNamed(value: string, fallbackName: string): { name: string; path: string } {
  const eq = value.indexOf('=');
  return eq > 0 ? { name: value.slice(0, eq), path: value.slice(eq + 1) } : { name: fallbackName, path: value };
}

interface ServeCliOptions {
  model: string[];
  run: string[];
  runsDir: string;
  name: string;
  host: string;
  port: number;
  maxBatch: number;
  maxWaitMs: number;
  maxQueue: number;
  maxBodyBytes: number;
  maxPending: number;
  maxDelayMs: number;
  maxUtilization: number;
  grpcPort?: number;
  keepVersions: number;
  follow: boolean;
  followIntervalMs: number;
  backend: BackendPreference;
  logFormat: LogFormat;
}

export function register(program: Command): void {
  program
    .command('serve')
    .description('answer predictions from trained models over the TensorFlow Serving REST API (POST /v1/models/NAME:predict) and, with --grpc-port, its gRPC Predict')
    .option('--model <[name=]dir>', 'a checkpoint directory (model.json + weights.bin); repeat for several models', collectSource, [])
    .option('--run <[name=]run>', "a run directory (or name under --runs-dir): serve its newest committed round; repeatable", collectSource, [])
    .option('--runs-dir <dir>', 'where runs are', 'runs')
    .option('--name <name>', 'model name for a --model/--run given without name=', 'default')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'HTTP port (TF Serving uses 8501; 0 picks a free one)', parsePort, 8501)
    .option('--grpc-port <port>', "also serve TF Serving's gRPC PredictionService.Predict and ModelService.GetModelStatus (TF Serving uses 8500; 0 picks a free one)", parsePort)
    .option('--max-batch <n>', 'most instances per forward pass; 1 turns batching off', positiveInt, 64)
    .option('--max-wait-ms <ms>', 'under load, how long a partial batch waits for more requests (a request finding the model idle runs at once)', nonNegative, 2)
    .option('--max-queue <n>', 'most instances waiting per model version; beyond it requests get 429', positiveInt, 1024)
    .option('--max-pending <n>', 'most predict requests in progress at once (reading, queued or running); beyond it requests get 429', positiveInt, 1024)
    .option('--max-delay-ms <ms>', 'refuse (429 / RESOURCE_EXHAUSTED), on its headers before its body is read, a request expected to wait longer than this; a request that carries a deadline (x-deadline-ms, gRPC deadline) gets half its deadline instead', positiveInt, 100)
    .option('--max-utilization <fraction>', 'when the event loop was busier than this over the last 100 ms and admitted work fell behind (loop lag > 20 ms or queued wait > 25 ms), admit requests at a reduced rate and refuse the rest at once (1 turns this off)', utilization, 0.9)
    .option('--max-body-bytes <n>', 'larger request bodies get 413', positiveInt, 16 * 1024 * 1024)
    .option('--keep-versions <n>', 'versions kept per name as newer rounds arrive', positiveInt, 2)
    .option('--follow', "with --run: load each newly committed round while serving (hot swap, no dropped requests)", false)
    .option('--follow-interval-ms <ms>', 'how often --follow checks the run', positiveInt, 1000)
    .option('--backend <name>', 'auto|tensorflow|tensorflow-gpu|wasm|cpu', parseChoice(backendPreferenceSchema), 'auto' as BackendPreference)
    .option('--log-format <format>', 'text: "TIME [crowdfl serve] message" lines; json: one object per line, for log shippers', parseChoice(logFormatSchema), 'text' as LogFormat)
    .action(
      action(async (opts: ServeCliOptions) => {
        if (opts.model.length + opts.run.length === 0) throw new UsageError('give --model DIR or --run RUN');
        if (opts.follow && opts.run.length === 0) throw new UsageError('--follow follows runs: give --run RUN');
        const sources: ModelSource[] = [
          ...opts.model.map((m) => splitNamed(m, opts.name)).map(({ name, path }) => ({ name, checkpoint: path })),
          ...opts.run.map((r) => splitNamed(r, opts.name)).map(({ name, path }) => ({ name, run: resolveRun(opts.runsDir, path) })),
        ];
        const log = lineLog('crowdfl serve', opts.logFormat);
        await initBackend(opts.backend, { log });
        const serving = await startServing({
          sources,
          batching: { maxBatch: opts.maxBatch, maxWaitMs: opts.maxWaitMs, maxQueue: opts.maxQueue },
          admission: { maxPending: opts.maxPending, maxDelayMs: opts.maxDelayMs, maxUtilization: opts.maxUtilization },
          http: { host: opts.host, port: opts.port, maxBodyBytes: opts.maxBodyBytes },
          grpc: opts.grpcPort === undefined ? undefined : { host: opts.host, port: opts.grpcPort, maxMessageBytes: opts.maxBodyBytes, maxConcurrentStreams: opts.maxPending },
          keepVersions: opts.keepVersions,
          followIntervalMs: opts.follow ? opts.followIntervalMs : undefined,
          log,
        }).catch((err: unknown) => {
          throw err instanceof ServingLoadError ? new UsageError(err.message) : err;
        });
        if (serving.grpcPort !== undefined) log(`gRPC PredictionService listening on ${opts.host}:${serving.grpcPort}`);
        log(`listening on http://${opts.host}:${serving.port} (max batch ${opts.maxBatch}, max wait ${opts.maxWaitMs} ms, max queue ${opts.maxQueue}, max delay ${opts.maxDelayMs} ms)`);
        const stop = (): void => {
          serving.close().then(() => process.exit(0), () => process.exit(1));
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      }),
    );
}

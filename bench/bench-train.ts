// `npm run bench:train [-- OPTIONS]`: issue 3's training-throughput benchmark.
// Samples per second (forward, backward, SGD step, through trainLocally) of the
// 2NN and the FedAvg CNN at several batch sizes on every tfjs backend that
// loads, next to PyTorch on the same machine and the machine's FP32 matmul
// peak, with the issue's targets marked MET or MISSED. Exits non-zero when a
// target is missed, as `npm run bench` does.
//
// Each backend runs in a child process of its own: a backend that crashes the
// process (a native binding, a wasm abort) is reported instead of ending the
// run, and no backend's allocations or compiled kernels colour another's
// numbers. PyTorch runs after them, never concurrently, for the same reason.
import { fork, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { backendVersions, ensureBackendFor, initBackend, missingTrainingKernels } from '../core/backend.js';
import { modelSpec, type ModelName } from '../core/model/zoo.js';
import type { BackendPreference } from '../core/backend.js';
import { forwardMacsPerSample, trainingFlopsPerSample } from '../core/model/flops.js';
import { BENCH_INPUT, measureTraining } from './train-throughput.js';
import { markdownCell } from '../lab/markdown.js';

type BenchModel = Extract<ModelName, '2nn' | 'cnn'>;
type BenchBackend = Extract<BackendPreference, 'tensorflow' | 'tensorflow-gpu' | 'wasm' | 'cpu'>;

const ALL_MODELS: readonly BenchModel[] = ['2nn', 'cnn'];
const ALL_BACKENDS: readonly BenchBackend[] = ['tensorflow', 'tensorflow-gpu', 'wasm', 'cpu'];
const DEFAULT_BACKENDS: readonly BenchBackend[] = ['tensorflow', 'wasm', 'cpu'];
const NATIVE_PACKAGE: Partial<Record<BenchBackend, string>> = {
  tensorflow: '@tensorflow/tfjs-node',
  'tensorflow-gpu': '@tensorflow/tfjs-node-gpu',
};
const MODEL_LABEL: Record<BenchModel, string> = { '2nn': '2NN', cnn: 'CNN' };
const PYTHON = '/usr/bin/python3';
const TORCH_SCRIPT = fileURLToPath(new URL('../../bench/bench_train_torch.py', import.meta.url));

interface Budget {
  warmupBatches: number;
  minSeconds: number;
  minBatches: number;
  maxSeconds: number;
  /** A model whose smallest batch is projected to take longer than this is measured on that batch only... */
  slowBatchSeconds: number;
  /** ...for this many batches, and its larger batch sizes are skipped. */
  slowBatches: number;
}

const FULL_BUDGET: Budget = { warmupBatches: 3, minSeconds: 2, minBatches: 10, maxSeconds: 60, slowBatchSeconds: 5, slowBatches: 2 };
const QUICK_BUDGET: Budget = { warmupBatches: 1, minSeconds: 0.3, minBatches: 3, maxSeconds: 10, slowBatchSeconds: 5, slowBatches: 1 };

interface Options {
  quick: boolean;
  models: BenchModel[];
  backends: BenchBackend[];
  batches: number[];
  torch: boolean;
  torchThreads?: number;
  /** Training threads a node on this machine uses (all cores by default), measured next to one thread. */
  threads: number;
}

type CellStatus = 'ok' | 'n/a' | 'skipped' | 'error';

interface Cell {
  model: BenchModel;
  batch: number;
  /** A tfjs backend name, or 'pytorch'. */
  backend: string;
  /** Data-parallel training threads (trainLocally's threads); 1 unless stated. */
  threads?: number;
  status: CellStatus;
  samplesPerSecond?: number;
  batches?: number;
  seconds?: number;
  note?: string;
}

interface BackendInfo {
  backend: string;
  versions: Record<string, string>;
  details: string[];
  /** The backend's one-thread FP32 matmul rate, GFLOP/s (not measured on cpu). */
  matmulGflops?: number;
}

type ChildRequest =
  | { mode: 'measure'; backend: BenchBackend; models: BenchModel[]; batches: number[]; budget: Budget; threads: number }
  | { mode: 'default'; models: BenchModel[] };

type ChildMessage =
  | { kind: 'progress'; text: string }
  | { kind: 'ready'; info: BackendInfo }
  | { kind: 'unavailable'; reason: string }
  | { kind: 'cell'; cell: Cell }
  | { kind: 'default'; auto: string; trainsOn: Partial<Record<BenchModel, string>>; notes: string[] };

interface TorchInfo {
  torch?: string;
  python?: string;
  threads?: number;
  interop_threads?: number;
  mkldnn?: boolean;
  cpu_capability?: string | null;
  blas?: { libraries?: string[]; torch_blas_info?: string | null; openblas?: { config?: string; core?: string; threads?: number } };
}

interface Peak {
  gflops: number;
  /** The same matmul on one BLAS thread, when the BLAS lets its threads be set. */
  gflops_1thread?: number;
  blas_threads?: number;
  size: number;
  repeats: number;
  via: string;
}

// ---------------------------------------------------------------- child side

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function fmtRate(x: number): string {
  if (x >= 100) return x.toFixed(0);
  if (x >= 10) return x.toFixed(1);
  return x.toPrecision(2);
}

/** The backend's best square matrix product: the ceiling any training step on it works under. */
function matmulPeak(size = 1024, repeats = 7): { gflops: number; size: number; repeats: number } {
  const a = tf.randomUniform([size, size]);
  const b = tf.randomUniform([size, size]);
  try {
    let best = Infinity;
    for (let r = 0; r < repeats + 1; r++) {
      const t0 = performance.now();
      const c = tf.matMul(a, b);
      c.dataSync();
      const ms = performance.now() - t0;
      c.dispose();
      if (r > 0) best = Math.min(best, ms);
    }
    return { gflops: (2 * size ** 3) / (best * 1e6), size, repeats };
  } finally {
    tf.dispose([a, b]);
  }
}

async function childMeasure(req: Extract<ChildRequest, { mode: 'measure' }>, send: (m: ChildMessage) => void): Promise<void> {
  const say = (text: string) => send({ kind: 'progress', text });
  let active: string;
  try {
    active = await initBackend(req.backend, { log: say });
  } catch (err) {
    send({ kind: 'unavailable', reason: errorText(err) });
    return;
  }
  const details: string[] = [];
  if (active === 'wasm') {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
    const threads = await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT');
    details.push(`SIMD ${simd ? 'on' : 'off'}, ${wasm.getThreadsCount()} thread(s)${threads ? '' : ' (tfjs-backend-wasm runs single-threaded under Node)'}`);
  }
  const peak = active === 'cpu' ? undefined : matmulPeak();
  if (peak) details.push(`FP32 matmul on this backend, one thread: ${peak.gflops.toFixed(1)} GFLOP/s (${peak.size}×${peak.size}, best of ${peak.repeats})`);
  send({ kind: 'ready', info: { backend: active, versions: backendVersions(), details, matmulGflops: peak?.gflops } });

  for (const model of req.models) {
    const spec = modelSpec(model, BENCH_INPUT);
    const cell = (batch: number, rest: Omit<Cell, 'model' | 'batch' | 'backend'>): void =>
      send({ kind: 'cell', cell: { model, batch, backend: active, ...rest } });
    const missing = missingTrainingKernels(spec, active);
    if (missing.length > 0) {
      say(`${model}: cannot train on ${active}, it lacks ${missing.join(', ')}`);
      for (const batch of req.batches) cell(batch, { status: 'n/a', note: `lacks ${missing.join(', ')}` });
      continue;
    }
    // Two one-example steps: the first builds the model and touches every
    // kernel, the second says roughly how long an example takes, which
    // decides whether the full budget is affordable.
    let perSample: number;
    try {
      await measureTraining({ spec, batchSize: 1, warmupBatches: 0, minSeconds: 0, minBatches: 1 });
      perSample = (await measureTraining({ spec, batchSize: 1, warmupBatches: 0, minSeconds: 0, minBatches: 1 })).seconds;
    } catch (err) {
      say(`${model}: probe failed: ${errorText(err)}`);
      for (const batch of req.batches) cell(batch, { status: 'error', note: errorText(err) });
      continue;
    }
    const smallest = Math.min(...req.batches);
    const slow = smallest * perSample > req.budget.slowBatchSeconds;
    if (slow) {
      say(
        `${model}: ~${(1 / perSample).toFixed(2)} samples/s at batch 1, so only batch ${smallest} is measured, ` +
          `for ${req.budget.slowBatches} batch(es) (~${(req.budget.slowBatches * smallest * perSample).toFixed(0)} s)`,
      );
    }
    for (const batch of req.batches) {
      if (slow && batch !== smallest) {
        cell(batch, { status: 'skipped', note: `too slow: ~${(batch * perSample).toFixed(0)} s per batch` });
        continue;
      }
      say(`${model} batch ${batch}: training`);
      const full = {
        spec,
        batchSize: batch,
        warmupBatches: req.budget.warmupBatches,
        minSeconds: req.budget.minSeconds,
        minBatches: req.budget.minBatches,
        maxSeconds: req.budget.maxSeconds,
      };
      try {
        const r = await measureTraining(slow ? { spec, batchSize: batch, warmupBatches: 0, minSeconds: 0, minBatches: req.budget.slowBatches } : full);
        if (!Number.isFinite(r.loss)) say(`${model} batch ${batch}: training loss is ${r.loss}; the figure may be off`);
        say(`${model} batch ${batch}: ${fmtRate(r.samplesPerSecond)} samples/s (${r.batches} batches in ${r.seconds.toFixed(2)} s)`);
        cell(batch, {
          status: 'ok',
          samplesPerSecond: r.samplesPerSecond,
          batches: r.batches,
          seconds: r.seconds,
          note: slow ? `${r.batches} batch(es) in ${r.seconds.toFixed(0)} s; warmed up by the batch-1 probe only` : undefined,
        });
        if (!slow && req.threads > 1) {
          // As a node with this machine's cores trains: data-parallel where trainLocally judges a share worth it.
          const p = await measureTraining({ ...full, threads: req.threads });
          if (p.threads > 1) {
            say(`${model} batch ${batch}, ${p.threads} threads: ${fmtRate(p.samplesPerSecond)} samples/s (${p.batches} batches in ${p.seconds.toFixed(2)} s)`);
            cell(batch, { status: 'ok', threads: p.threads, samplesPerSecond: p.samplesPerSecond, batches: p.batches, seconds: p.seconds });
          } else {
            say(`${model} batch ${batch}: a share of ${req.threads} threads would be too small; a node trains it on one`);
          }
        }
      } catch (err) {
        say(`${model} batch ${batch}: failed: ${errorText(err)}`);
        cell(batch, { status: 'error', note: errorText(err) });
      }
    }
  }
}

async function childDefault(req: Extract<ChildRequest, { mode: 'default' }>, send: (m: ChildMessage) => void): Promise<void> {
  const notes: string[] = [];
  const auto = await initBackend('auto', { log: (msg) => notes.push(msg) });
  const trainsOn: Partial<Record<BenchModel, string>> = {};
  for (const model of req.models) {
    // What a node does before training: fall back if the backend lacks a kernel.
    trainsOn[model] = await ensureBackendFor(modelSpec(model, BENCH_INPUT), { log: (msg) => notes.push(msg) });
    if (tf.getBackend() !== auto) await tf.setBackend(auto);
  }
  send({ kind: 'default', auto, trainsOn, notes });
}

async function runChild(arg: string): Promise<void> {
  const pending: Promise<void>[] = [];
  const send = (m: ChildMessage): void => {
    pending.push(new Promise((resolve) => process.send?.(m, undefined, {}, () => resolve()) ?? resolve()));
  };
  const req = JSON.parse(arg) as ChildRequest;
  if (req.mode === 'measure') await childMeasure(req, send);
  else await childDefault(req, send);
  // Exit explicitly once the parent has every message: a backend's leftover
  // handles must not keep the child, and so the parent, waiting.
  await Promise.all(pending);
  process.exit(0);
}

// --------------------------------------------------------------- parent side

function log(text: string): void {
  process.stderr.write(`${text}\n`);
}

function usage(): string {
  return [
    'usage: node dist/bench/bench-train.js [--quick] [--models 2nn,cnn] [--backends tensorflow,wasm,cpu] [--batches 10,32,64]',
    '                                           [--no-torch] [--torch-threads N] [--threads N]',
    '  --quick          fewer batches and shorter time budgets: a smoke run, not numbers to quote',
    '  --models         models to train (2nn, cnn)',
    `  --backends       tfjs backends (${ALL_BACKENDS.join(', ')}); each runs in its own process`,
    '  --batches        batch sizes',
    `  --no-torch       skip the PyTorch comparison (the matmul peak is still measured if ${PYTHON} can)`,
    '  --torch-threads  torch.set_num_threads(N) before measuring PyTorch (default: PyTorch\'s own choice)',
    `  --threads        data-parallel training threads measured next to one (default: all ${availableParallelism()} cores, as a node uses; 1 skips)`,
  ].join('\n');
}

function parseList<T extends string>(value: string, allowed: readonly T[], what: string): T[] {
  const items = value.split(',').map((s) => s.trim()).filter(Boolean);
  for (const item of items) {
    if (!(allowed as readonly string[]).includes(item)) throw new Error(`unknown ${what} "${item}"; choose from ${allowed.join(', ')}`);
  }
  if (items.length === 0) throw new Error(`--${what}s needs at least one value`);
  return [...new Set(items as T[])];
}

function parseOptions(argv: string[]): Options {
  const o: Options = { quick: false, models: [...ALL_MODELS], backends: [...DEFAULT_BACKENDS], batches: [10, 32, 64], torch: true, threads: availableParallelism() };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--quick':
        o.quick = true;
        break;
      case '--models':
        o.models = parseList(value(), ALL_MODELS, 'model');
        break;
      case '--backends':
        o.backends = parseList(value(), ALL_BACKENDS, 'backend');
        break;
      case '--batches': {
        const raw = value();
        const batches = raw.split(',').map((s) => Number(s.trim()));
        if (batches.length === 0 || !batches.every((b) => Number.isInteger(b) && b > 0)) throw new Error(`--batches takes positive integers, got "${raw}"`);
        o.batches = [...new Set(batches)].sort((a, b) => a - b);
        break;
      }
      case '--no-torch':
        o.torch = false;
        break;
      case '--threads': {
        const n = Number(value());
        if (!Number.isInteger(n) || n < 1) throw new Error('--threads takes a positive integer');
        o.threads = n;
        break;
      }
      case '--torch-threads': {
        const n = Number(value());
        if (!Number.isInteger(n) || n < 1) throw new Error('--torch-threads takes a positive integer');
        o.torchThreads = n;
        break;
      }
      case '--help':
      case '-h':
        process.stdout.write(`${usage()}\n`);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option ${flag}\n${usage()}`);
    }
  }
  return o;
}

function isInstalled(pkg: string): boolean {
  try {
    createRequire(import.meta.url).resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

// tfjs-core's advert for tfjs-node, printed whenever the cpu backend starts under Node.
const TFJS_BANNER = /^(\s*|=+|Hi, looks like you are running TensorFlow\.js in Node\.js\..*)$/;

interface ChildOutcome {
  messages: ChildMessage[];
  /** How the child ended abnormally ('signal SIGKILL', 'code 1'); undefined if it exited cleanly. */
  crash?: string;
  /** The child's last lines of output, which usually say why. */
  tail: string[];
}

function runInChild(req: ChildRequest, label: string): Promise<ChildOutcome> {
  return new Promise((resolve) => {
    const child = fork(fileURLToPath(import.meta.url), ['--child', JSON.stringify(req)], {
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      execArgv: [],
    });
    const messages: ChildMessage[] = [];
    const tail: string[] = [];
    const relay = (stream: NodeJS.ReadableStream | null) => {
      if (!stream) return;
      createInterface({ input: stream }).on('line', (line) => {
        if (TFJS_BANNER.test(line)) return;
        tail.push(line);
        if (tail.length > 20) tail.shift();
        log(`  [${label}] ${line}`);
      });
    };
    relay(child.stdout);
    relay(child.stderr);
    child.on('message', (raw) => {
      const m = raw as ChildMessage;
      messages.push(m);
      if (m.kind === 'progress') log(`  [${label}] ${m.text}`);
    });
    child.on('error', (err) => resolve({ messages, crash: `could not start: ${err.message}`, tail }));
    // 'close', not 'exit': it comes after the child's output streams end, so the tail is complete.
    child.on('close', (code, signal) => {
      resolve({ messages, crash: code === 0 && !signal ? undefined : signal ? `signal ${signal}` : `code ${code}`, tail });
    });
  });
}

interface TorchOutcome {
  info?: TorchInfo;
  peak?: Peak;
  cells: Cell[];
  problems: string[];
}

function pythonCan(module: string): boolean {
  const r = spawnSync(PYTHON, ['-c', `import ${module}`], { stdio: 'ignore', timeout: 120_000 });
  return r.status === 0;
}

function runTorch(config: Record<string, unknown>): Promise<TorchOutcome> {
  return new Promise((resolve) => {
    const out: TorchOutcome = { cells: [], problems: [] };
    const py = spawn(PYTHON, [TORCH_SCRIPT, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'pipe'] });
    createInterface({ input: py.stderr }).on('line', (line) => log(`  [pytorch] ${line}`));
    createInterface({ input: py.stdout }).on('line', (line) => {
      let m: Record<string, unknown>;
      try {
        m = JSON.parse(line) as Record<string, unknown>;
      } catch {
        log(`  [pytorch] ${line}`);
        return;
      }
      if (m.kind === 'info') out.info = m as TorchInfo;
      else if (m.kind === 'peak') out.peak = m as unknown as Peak;
      else if (m.kind === 'error') out.problems.push(`${String(m.what)}: ${String(m.message)}`);
      else if (m.kind === 'cell') {
        const model = m.model as BenchModel;
        const batch = Number(m.batch);
        if (typeof m.error === 'string') out.cells.push({ model, batch, backend: 'pytorch', status: 'error', note: m.error });
        else {
          out.cells.push({
            model,
            batch,
            backend: 'pytorch',
            status: 'ok',
            samplesPerSecond: Number(m.samples_per_second),
            batches: Number(m.batches),
            seconds: Number(m.seconds),
          });
        }
      }
    });
    py.on('error', (err) => {
      out.problems.push(`could not start ${PYTHON}: ${err.message}`);
      resolve(out);
    });
    py.on('close', (code, signal) => {
      if (code !== 0) out.problems.push(`${PYTHON} ${TORCH_SCRIPT} exited with ${signal ? `signal ${signal}` : `code ${code}`}`);
      resolve(out);
    });
  });
}

function fmtPct(x: number): string {
  const pct = 100 * x;
  return pct >= 10 ? `${pct.toFixed(0)}%` : pct >= 1 ? `${pct.toFixed(1)}%` : `${pct.toFixed(2)}%`;
}

function fmtRatio(x: number): string {
  return x >= 10 ? `${x.toFixed(0)}×` : x >= 0.1 ? `${x.toFixed(2)}×` : `${x.toPrecision(2)}×`;
}

function loadText(): string {
  return loadavg()
    .map((l) => l.toFixed(2))
    .join(', ');
}

async function main(): Promise<void> {
  let opts: Options;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (err) {
    log(errorText(err));
    process.exitCode = 2;
    return;
  }
  const budget = opts.quick ? QUICK_BUDGET : FULL_BUDGET;
  const started = new Date();
  const loadBefore = loadText();
  log(`bench:train${opts.quick ? ' --quick' : ''}: models ${opts.models.join(', ')}; batches ${opts.batches.join(', ')}; backends ${opts.backends.join(', ')}`);
  log(`load average before: ${loadBefore} (on ${cpus().length} cores; others' load skews every figure)`);

  const flops: Record<string, number> = {};
  for (const model of opts.models) {
    const spec = modelSpec(model, BENCH_INPUT);
    flops[model] = trainingFlopsPerSample(spec);
    log(`${MODEL_LABEL[model]}: ${(forwardMacsPerSample(spec) / 1e6).toFixed(3)} M multiply-adds forward → ${(flops[model] / 1e6).toFixed(2)} MFLOP per training sample (3 × forward)`);
  }

  const cells: Cell[] = [];
  const infos: BackendInfo[] = [];
  const backendNotes: string[] = [];

  log('default backend: asking initBackend("auto") in a child process');
  const def = await runInChild({ mode: 'default', models: opts.models }, 'auto');
  const defMsg = def.messages.find((m): m is Extract<ChildMessage, { kind: 'default' }> => m.kind === 'default');
  if (!defMsg) backendNotes.push(`default backend unknown: the probe process ${def.crash ? `died (${def.crash})` : 'sent nothing'}`);
  else {
    log(`default backend: ${defMsg.auto}${Object.entries(defMsg.trainsOn).filter(([, b]) => b !== defMsg.auto).map(([m, b]) => `; ${m} trains on ${b}`).join('')}`);
    for (const n of defMsg.notes) log(`  [auto] ${n}`);
  }

  for (const backend of opts.backends) {
    const pkg = NATIVE_PACKAGE[backend];
    if (pkg && !isInstalled(pkg)) {
      const line = `${backend}: skipped, ${pkg} is not installed (npm install ${pkg}@${tf.version.tfjs} to include it)`;
      log(line);
      backendNotes.push(line);
      continue;
    }
    log(`${backend}: measuring in a child process`);
    const outcome = await runInChild({ mode: 'measure', backend, models: opts.models, batches: opts.batches, budget, threads: opts.threads }, backend);
    const got: Cell[] = [];
    for (const m of outcome.messages) {
      if (m.kind === 'ready') infos.push(m.info);
      else if (m.kind === 'cell') got.push(m.cell);
      else if (m.kind === 'unavailable') {
        const line = `${backend}: skipped, it does not load here: ${m.reason}`;
        log(line);
        backendNotes.push(line);
      }
    }
    const unavailable = outcome.messages.some((m) => m.kind === 'unavailable');
    if (outcome.crash) {
      const last = outcome.tail.slice(-5).join(' / ');
      const line = `${backend}: the measuring process died (${outcome.crash})${last ? `; its last output: ${last}` : ''}`;
      log(line);
      backendNotes.push(line);
    }
    if (!unavailable) {
      // Cells the child never reported died with it.
      for (const model of opts.models) {
        for (const batch of opts.batches) {
          if (!got.some((c) => c.model === model && c.batch === batch && (c.threads ?? 1) === 1)) {
            got.push({ model, batch, backend, status: 'error', note: outcome.crash ? `process died (${outcome.crash})` : 'no result' });
          }
        }
      }
    }
    cells.push(...got);
  }

  let torch: TorchOutcome | undefined;
  const torchNotes: string[] = [];
  const haveTorch = pythonCan('torch');
  const torchConfig = {
    models: opts.models,
    batches: opts.batches,
    warmup_batches: budget.warmupBatches,
    min_seconds: budget.minSeconds,
    min_batches: budget.minBatches,
    max_seconds: budget.maxSeconds,
    learning_rate: 0.01,
    peak_size: 2048,
    peak_repeats: opts.quick ? 3 : 7,
    ...(opts.torchThreads ? { threads: opts.torchThreads } : {}),
  };
  if (haveTorch && opts.torch) {
    log('pytorch: matmul peak, then the same cells');
    torch = await runTorch(torchConfig);
  } else {
    torchNotes.push(haveTorch ? 'PyTorch comparison skipped (--no-torch)' : `PyTorch is not importable by ${PYTHON}; no PyTorch comparison`);
    if (haveTorch || pythonCan('numpy')) {
      log(`pytorch: cells skipped; measuring the matmul peak only`);
      torch = await runTorch({ ...torchConfig, peak_only: true });
    } else {
      torchNotes.push(`neither torch nor numpy is importable by ${PYTHON}: the fraction-of-peak column is unavailable`);
    }
  }
  if (torch) {
    cells.push(...torch.cells);
    torchNotes.push(...torch.problems);
  }
  const peak = torch?.peak;
  // On a loaded machine the all-threads matmul can come out below the one-thread one; the best seen is the peak.
  const peakGflops = peak ? Math.max(peak.gflops, peak.gflops_1thread ?? 0) : undefined;
  const loadAfter = loadText();

  // ---- table
  const find = (model: string, batch: number, backend: string, threads = 1) =>
    cells.find((c) => c.model === model && c.batch === batch && c.backend === backend && (c.threads ?? 1) === threads);
  // What a node with this machine's cores gets: the data-parallel figure where trainLocally splits the batch.
  const asNodeTrains = (model: string, batch: number, backend: string) =>
    cells
      .filter((c) => c.model === model && c.batch === batch && c.backend === backend)
      .sort((a, b) => (b.threads ?? 1) - (a.threads ?? 1))[0];
  const rate = (c: Cell | undefined) => (c?.status === 'ok' && c.samplesPerSecond !== undefined ? c.samplesPerSecond : undefined);
  const auto = defMsg?.auto;
  const backendOrder = ['tensorflow', 'wasm', 'cpu', 'pytorch'];
  const sorted = [...cells].sort(
    (a, b) =>
      ALL_MODELS.indexOf(a.model) - ALL_MODELS.indexOf(b.model) ||
      a.batch - b.batch ||
      (backendOrder.indexOf(a.backend) + 1 || 99) - (backendOrder.indexOf(b.backend) + 1 || 99) ||
      (a.threads ?? 1) - (b.threads ?? 1),
  );
  const rows = sorted.map((c) => {
    const r = rate(c);
    const torchRate = c.backend === 'pytorch' ? undefined : rate(find(c.model, c.batch, 'pytorch'));
    const shown =
      r !== undefined ? fmtRate(r) : c.status === 'n/a' ? `n/a: ${c.note ?? ''}` : c.status === 'skipped' ? `skipped (${c.note ?? 'too slow'})` : `error`;
    const pct = r !== undefined && peakGflops ? fmtPct((r * flops[c.model]) / (peakGflops * 1e9)) : '–';
    const ratio = r !== undefined && torchRate !== undefined ? fmtRatio(r / torchRate) : c.backend === 'pytorch' && r !== undefined ? '1×' : '–';
    const label = `${c.backend}${c.backend === auto ? ' (default)' : ''}${(c.threads ?? 1) > 1 ? `, ${c.threads} threads` : ''}`;
    const note = c.status === 'error' ? (c.note ?? '') : c.status === 'ok' ? (c.note ?? (c.batches !== undefined ? `${c.batches} batches, ${c.seconds?.toFixed(1)} s` : '')) : '';
    return `| ${MODEL_LABEL[c.model]} | ${c.batch} | ${label} | ${markdownCell(shown)} | ${pct} | ${ratio} | ${markdownCell(note)} |`;
  });
  const table = ['| model | batch | backend | samples/s | % of peak | vs PyTorch | measured over |', '|---|---:|---|---:|---:|---:|---|', ...rows];

  // ---- targets
  const targetLines: string[] = [];
  let missed = 0;
  const verdict = (met: boolean) => {
    if (!met) missed++;
    return met ? 'MET' : 'MISSED';
  };
  const trainsOn = (model: BenchModel) => defMsg?.trainsOn[model] ?? auto;
  // How close to the backend's own matmul rate on every thread a node would have to train to meet a target.
  const ceiling = (backend: string | undefined, model: BenchModel, samplesPerSecond: number): string => {
    const gflops = infos.find((i) => i.backend === backend)?.matmulGflops;
    if (!gflops) return '';
    const needed = (samplesPerSecond * flops[model]) / 1e9;
    return ` (the target needs ${needed.toFixed(1)} GFLOP/s of training, ${fmtPct(needed / (gflops * opts.threads))} of ${backend}'s one-thread matmul rate × ${opts.threads} thread(s))`;
  };
  if (opts.models.includes('cnn')) {
    const b = trainsOn('cnn');
    const why = b !== auto ? ` (the default ${auto} lacks a kernel the CNN needs, so a node trains it on ${b})` : '';
    const pairs = opts.batches.map((batch) => ({ batch, ours: rate(asNodeTrains('cnn', batch, b ?? '')), torch: rate(find('cnn', batch, 'pytorch')) }));
    const vsTorch = pairs.filter((p) => p.ours !== undefined && p.torch !== undefined);
    if (!b) targetLines.push('- CNN on the default backend ≥ 50% of PyTorch (aim ≥ 1×): not evaluated, the default backend is unknown');
    else if (vsTorch.length === 0) targetLines.push(`- CNN on the default backend (${b}) ≥ 50% of PyTorch (aim ≥ 1×): not evaluated, no pair of ${b} and PyTorch CNN figures`);
    else {
      const ratios = vsTorch.map((p) => p.ours! / p.torch!);
      const detail = vsTorch.map((p, i) => `batch ${p.batch}: ${fmtRate(p.ours!)} vs ${fmtRate(p.torch!)} samples/s = ${fmtRatio(ratios[i])}`).join('; ');
      const aim = ratios.every((r) => r >= 1) ? 'aim ≥ 1× reached' : 'aim ≥ 1× not reached';
      const unmeasured = pairs.filter((p) => !vsTorch.includes(p)).map((p) => p.batch);
      targetLines.push(
        `- CNN on the default backend (${b})${why} ≥ 50% of PyTorch at every batch size: ${verdict(ratios.every((r) => r >= 0.5))}; ${aim} — ${detail}` +
          (unmeasured.length ? ` (batch ${unmeasured.join(', ')} not measured on ${b})` : '') +
          ceiling(b, 'cnn', 0.5 * Math.max(...vsTorch.map((p) => p.torch!))),
      );
    }
    const vsCpu = pairs
      .map((p) => ({ ...p, cpu: rate(find('cnn', p.batch, 'cpu')) }))
      .filter((p) => p.ours !== undefined && p.cpu !== undefined);
    if (!b) targetLines.push('- CNN on the default backend ≥ 100× cpu: not evaluated, the default backend is unknown');
    else if (vsCpu.length === 0) targetLines.push(`- CNN on the default backend (${b}) ≥ 100× cpu: not evaluated, no batch size has both ${b} and cpu CNN figures`);
    else {
      const detail = vsCpu.map((p) => `batch ${p.batch}: ${fmtRate(p.ours!)} vs ${fmtRate(p.cpu!)} samples/s = ${fmtRatio(p.ours! / p.cpu!)}`).join('; ');
      targetLines.push(
        `- CNN on the default backend (${b}) ≥ 100× cpu, where cpu was measured: ${verdict(vsCpu.every((p) => p.ours! / p.cpu! >= 100))} — ${detail}`,
      );
    }
  }
  if (opts.models.includes('2nn')) {
    const b = trainsOn('2nn');
    const ours = rate(asNodeTrains('2nn', 32, b ?? ''));
    const theirs = rate(find('2nn', 32, 'pytorch'));
    if (!b || ours === undefined || theirs === undefined) {
      targetLines.push(`- 2NN on the default backend ≥ 1× PyTorch at batch 32: not evaluated, ${!b ? 'default backend unknown' : `no ${b} and PyTorch figures at batch 32`}`);
    } else {
      targetLines.push(
        `- 2NN on the default backend (${b}) ≥ 1× PyTorch at batch 32: ${verdict(ours >= theirs)} — ${fmtRate(ours)} vs ${fmtRate(theirs)} samples/s = ${fmtRatio(ours / theirs)}` +
          ceiling(b, '2nn', theirs),
      );
    }
  }

  // ---- context
  const context: string[] = [];
  context.push(`- ${started.toISOString()}; ${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} logical cores; Node ${process.version}`);
  context.push(`- load average (1, 5, 15 min) before: ${loadBefore}; after: ${loadAfter}`);
  context.push(
    `- budget per cell: ${budget.warmupBatches} warm-up batch(es), then timed until ≥ ${budget.minSeconds} s and ≥ ${budget.minBatches} batches (cap ${budget.maxSeconds} s); ` +
      `a model projected at > ${budget.slowBatchSeconds} s per batch is timed over ${budget.slowBatches} batch(es) of its smallest batch size only${opts.quick ? ' (--quick)' : ''}`,
  );
  context.push(`- FLOPs per training sample (3 × forward, from the layer shapes): ${opts.models.map((m) => `${MODEL_LABEL[m]} ${(flops[m] / 1e6).toFixed(2)} M`).join(', ')}`);
  context.push(
    `- a node trains with all its cores by default: rows marked "N threads" are trainLocally's data-parallel training (trainer/training/data-parallel.ts), ` +
      `measured where it splits the batch; the targets take the figure a node gets (that row where there is one)`,
  );
  if (auto) context.push(`- default backend (initBackend('auto')): ${auto}${opts.models.map((m) => (defMsg?.trainsOn[m] !== auto ? `; ${MODEL_LABEL[m]} trains on ${defMsg?.trainsOn[m]} (ensureBackendFor)` : '')).join('')}`);
  for (const info of infos) {
    const v = info.versions;
    const versions = ['tfjs', 'tfjs-backend-wasm', 'tfjs-node', 'tensorflow'].filter((k) => v[k]).map((k) => `${k} ${v[k]}`).join(', ');
    context.push(`- ${info.backend}: ${versions}${info.details.length ? `; ${info.details.join('; ')}` : ''}`);
  }
  for (const n of backendNotes) context.push(`- ${n}`);
  if (torch?.info) {
    const i = torch.info;
    const ob = i.blas?.openblas;
    const blasLib = i.blas?.libraries?.find((l) => /blas|mkl_/.test(l));
    if (i.torch) {
      context.push(
        `- PyTorch ${i.torch} (Python ${i.python}): ${i.threads} intra-op thread(s), ${i.interop_threads} inter-op; oneDNN (mkldnn) ${i.mkldnn ? 'available' : 'unavailable'}; CPU capability ${i.cpu_capability ?? '?'}; BLAS_INFO=${i.blas?.torch_blas_info ?? '?'}`,
      );
    }
    context.push(`- BLAS loaded: ${blasLib ?? 'none found in /proc/self/maps'}${ob ? ` — ${ob.config}, kernel ${ob.core}, ${ob.threads} thread(s)` : ''}`);
  }
  if (peak) {
    const one = peak.gflops_1thread !== undefined ? `; on 1 BLAS thread ${peak.gflops_1thread.toFixed(1)} GFLOP/s` : '';
    context.push(
      `- FP32 matmul peak: ${peak.gflops.toFixed(1)} GFLOP/s (${peak.via}, ${peak.size}×${peak.size}, best of ${peak.repeats}` +
        `${peak.blas_threads ? `, ${peak.blas_threads} BLAS threads` : ''})${one}; "% of peak" = samples/s × FLOPs per sample ÷ ${peakGflops?.toFixed(1)} GFLOP/s, the better of the two`,
    );
  } else {
    context.push('- FP32 matmul peak: not measured, so the % of peak column is unavailable');
  }
  for (const n of torchNotes) context.push(`- ${n}`);

  const report = [
    `# Training throughput (issue 3)${opts.quick ? ' — quick run' : ''}`,
    '',
    ...context,
    '',
    ...table,
    '',
    '## Targets',
    '',
    ...(targetLines.length ? targetLines : ['- none evaluated for these models']),
    '',
  ].join('\n');
  process.stdout.write(`\n${report}`);
  mkdirSync('runs/bench', { recursive: true });
  const file = join('runs/bench', `train-${started.toISOString().replace(/[:.]/g, '-')}.md`);
  writeFileSync(file, report);
  log(`\nwritten to ${file}`);
  process.exitCode = missed ? 1 : 0;
}

if (process.argv[2] === '--child') {
  await runChild(process.argv[3] ?? '{}');
} else {
  await main();
}

// A small pool of worker threads for the coordinate-wise kernels (weighted
// sums, the median, the trimmed mean and Bulyan's second stage), used from synchronous code.
//
// The aggregators stay synchronous pure functions: the calling thread posts
// the kernel to each worker, and it and the workers take chunks of
// coordinates from a shared counter until none is left (runChunked); then it
// blocks in Atomics.wait until every worker has stored its sequence number in
// its control block (a SharedArrayBuffer). Every coordinate gets the same
// operations wherever it is done, so the result is bit-identical to one
// thread's; what accumulates across coordinates (per-update counts, shares at
// ties) is combined on the calling thread in coordinate order. Workers read
// the updates in place, so
// the pool is used only when every update sits on a SharedArrayBuffer (the
// aggregator assembles received updates there, core/tensor-codec.ts); other
// inputs, and rounds too small to repay the handoff, run on the calling
// thread. Results go to a per-worker scratch SharedArrayBuffer that is reused
// and only replaced by a larger one when a round needs more, so the pool's
// memory is bounded by the largest round it has seen.
//
// A worker that throws reports the message through its control block; one
// that exits marks it dead from its 'exit' handler; one that does neither is
// given up after a timeout. Each case is thrown on the calling thread as an
// Error (never a hang), and that worker is replaced on the next call.
// Workers are unref()'d: they never keep a process alive.

import os from 'node:os';
import { Worker } from 'node:worker_threads';

/** Control block slots (Int32Array indices). */
export const CTRL = { done: 0, state: 1, tieCount: 2, errLength: 3, size: 4 } as const;
/** Values of CTRL.state. */
export const STATE = { starting: 0, ready: 1, dead: 2 } as const;
export const ERROR_BYTES = 4096;

/**
 * Coordinates [0, d) cut into `chunks` chunks of `chunk`: every thread of a
 * call takes the next chunk from the counter in buffer[0] until none is left
 * and writes its index (0: the calling thread, w + 1: worker w) to
 * buffer[1 + c], so a descheduled thread (the machine may be shared) holds up
 * at most one chunk, not a fixed half of the work.
 */
export interface ChunkJob {
  readonly buffer: SharedArrayBuffer;
  readonly chunk: number;
  readonly chunks: number;
  readonly index: number;
  /** Thread i takes chunk i only (one chunk per thread): for tests that must see every thread work. */
  readonly fixed: boolean;
}

/** Runs fn on each chunk this thread takes, in ascending order; without a job, on [c0, c1). */
export function forEachChunk(task: { readonly c0: number; readonly c1: number; readonly d: number; readonly job?: ChunkJob | undefined }, fn: (c0: number, c1: number) => void): void {
  const { job } = task;
  if (job === undefined) {
    fn(task.c0, task.c1);
    return;
  }
  const slots = new Int32Array(job.buffer);
  for (let taken = 0; ; taken++) {
    const c = job.fixed ? (taken === 0 ? job.index : job.chunks) : Atomics.add(slots, 0, 1);
    if (c >= job.chunks) return;
    slots[1 + c] = job.index;
    fn(c * job.chunk, Math.min(task.d, (c + 1) * job.chunk));
  }
}

export type PoolTask = KernelTask & { readonly job?: ChunkJob | undefined };

type KernelTask =
  | {
      readonly kind: 'sum';
      readonly updates: readonly Float32Array[];
      readonly coeffs: Float64Array;
      readonly c0: number;
      readonly c1: number;
      readonly d: number;
      readonly n: number;
    }
  | {
      readonly kind: 'window';
      readonly updates: readonly Float32Array[];
      readonly lo: number;
      readonly hi: number;
      readonly c0: number;
      readonly c1: number;
      readonly d: number;
      readonly n: number;
    }
  | {
      readonly kind: 'closest';
      readonly updates: readonly Float32Array[];
      readonly beta: number;
      readonly c0: number;
      readonly c1: number;
      readonly d: number;
      readonly n: number;
    }
  /** Fault injection for tests: the worker throws, exits, or spins for c1 ms. */
  | { readonly kind: 'throw' | 'exit' | 'spin'; readonly c0: number; readonly c1: number; readonly d: number; readonly n: number };

export interface PoolMessage {
  readonly seq: number;
  readonly task: PoolTask;
  readonly scratch: SharedArrayBuffer;
}

/** What a worker wrote for its range. out is indexed like the updates (length d). */
export interface SharedResult {
  readonly out: Float32Array;
  readonly used: Int32Array;
  readonly tieCount: number;
  /** Coordinates with ties, ascending. */
  readonly ties: Int32Array;
  /** 'window': each tie's two edge values. */
  readonly tieLow: Float32Array;
  readonly tieHigh: Float32Array;
  /** 'closest': each tie's median, cut-off distance and share, three float64 per tie. */
  readonly tieValues: Float64Array;
}

/** Bytes of scratch a task needs, and where its regions start. */
function scratchLayout(task: PoolTask) {
  const { d, n } = task;
  const len = Math.max(0, task.c1 - task.c0);
  const used = 4 * d;
  const ties = used + 4 * n;
  const low = ties + 4 * len;
  const high = low + (task.kind === 'window' ? 4 * len : 0);
  const values = (high + (task.kind === 'window' ? 4 * len : 0) + 7) & ~7;
  const bytes = values + (task.kind === 'closest' ? 24 * len : 0);
  return { len, used, ties, low, high, values, bytes };
}

/** The views on a worker's scratch for a task (same layout on both sides). */
export function resultViews(scratch: SharedArrayBuffer, task: PoolTask, tieCount = 0): SharedResult {
  const at = scratchLayout(task);
  const { len } = at;
  const window = task.kind === 'window' ? len : 0;
  return {
    out: new Float32Array(scratch, 0, task.d),
    used: new Int32Array(scratch, at.used, task.n),
    tieCount,
    ties: new Int32Array(scratch, at.ties, len),
    tieLow: new Float32Array(scratch, at.low, window),
    tieHigh: new Float32Array(scratch, at.high, window),
    tieValues: new Float64Array(scratch, at.values, task.kind === 'closest' ? 3 * len : 0),
  };
}

function defaultWorkers(): number {
  const cpus = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  return Math.max(0, cpus - 1);
}

let workers = defaultWorkers();

/**
 * Below this many values (n·d) a round runs on the calling thread: handing a
 * range to a worker and waking it costs 0.1–0.15 ms. Measured on 2 cores
 * (load ≈ 1), one thread against one worker + the calling thread, ms: at
 * n·d = 250k the pool loses (mean 10 × 25,000: 0.16 vs 0.24; median 0.18 vs
 * 0.24), at 500k it is about level (median 10 × 50,000: 0.46 vs 0.46; mean
 * 0.26 vs 0.30), at 1M it wins (median 10 × 100,000: 0.92 vs 0.62;
 * 100 × 10,000: 1.11 vs 0.79; mean 100 × 10,000: 0.81 vs 0.67).
 */
let minValues = 1 << 20;

/** Whether threads take chunks as they go (the default) or one fixed chunk each (tests). */
let dynamicChunks = true;

/** Sets whether threads take chunks as they go (true) or one fixed chunk each; returns the previous setting. */
export function setPoolDynamicChunks(dynamic: boolean): boolean {
  const before = dynamicChunks;
  dynamicChunks = dynamic;
  return before;
}

/** How long a worker may take for its range before it is given up. */
let timeoutMs = 120_000;

/** Sets how many workers the kernels may use (0: calling thread only); returns the previous setting. */
export function setPoolWorkers(k: number): number {
  const before = workers;
  workers = Math.max(0, Math.floor(k));
  return before;
}

/** Sets the smallest round (n·d values) that is split across threads; returns the previous setting. */
export function setPoolMinValues(values: number): number {
  const before = minValues;
  minValues = values;
  return before;
}

/** Sets how long a worker may take before the call throws; returns the previous setting. */
export function setPoolTimeoutMs(ms: number): number {
  const before = timeoutMs;
  timeoutMs = ms;
  return before;
}

/**
 * A zeroed Float32Array on a SharedArrayBuffer: for updates the aggregation
 * path derives from received ones (clipped, discounted), so that a round
 * keeps the pool's in-place fast path.
 */
export function sharedFloat32(length: number): Float32Array {
  return new Float32Array(new SharedArrayBuffer(4 * length));
}

const isShared = (u: Float32Array) => Object.prototype.toString.call(u.buffer) === '[object SharedArrayBuffer]';

/** Into how many coordinate ranges (the calling thread's included) a kernel should split these updates. */
export function parallelParts(updates: readonly Float32Array[], d: number): number {
  if (workers === 0 || updates.length === 0 || updates.length * d < minValues) return 1;
  if (d < 1024 * (workers + 1)) return 1;
  for (const u of updates) if (!isShared(u)) return 1;
  return workers + 1;
}

const BOOTSTRAP = `
const { workerData } = require('node:worker_threads');
const ctrl = new Int32Array(workerData.ctrl);
const dead = () => { Atomics.store(ctrl, ${CTRL.state}, ${STATE.dead}); Atomics.notify(ctrl, ${CTRL.done}); };
process.on('exit', dead);
import(workerData.url).catch((e) => {
  const text = new TextEncoder().encode('cannot start: ' + (e && e.stack || e)).subarray(0, ${ERROR_BYTES});
  new Uint8Array(workerData.err).set(text);
  Atomics.store(ctrl, ${CTRL.errLength}, text.length);
  dead();
});
`;

interface Slot {
  readonly worker: Worker;
  readonly ctrl: Int32Array;
  readonly err: Uint8Array;
  scratch: SharedArrayBuffer;
  seq: number;
  exited: boolean;
}

const slots: (Slot | undefined)[] = [];

let tasksPosted = 0;
let workerChunks = 0;
let workersStarted = 0;

/** How many tasks have been handed to workers, chunks they did and workers started in this thread so far, and the bytes of scratch the live workers hold. */
export function poolStats(): { readonly tasks: number; readonly workerChunks: number; readonly started: number; readonly scratchBytes: number } {
  let scratchBytes = 0;
  for (const slot of slots) scratchBytes += slot?.scratch.byteLength ?? 0;
  return { tasks: tasksPosted, workerChunks, started: workersStarted, scratchBytes };
}

function startSlot(): Slot {
  const ctrlBuffer = new SharedArrayBuffer(4 * CTRL.size);
  const errBuffer = new SharedArrayBuffer(ERROR_BYTES);
  // A CommonJS bootstrap marks the control block dead on exit and reports a
  // failed import there too, before the worker module has run: the calling
  // thread is blocked, and cannot see the Worker's events until it returns.
  // No execArgv: the caller's (e.g. --input-type=module with -e) need not suit a worker file.
  const worker = new Worker(BOOTSTRAP, {
    eval: true,
    execArgv: [],
    workerData: { ctrl: ctrlBuffer, err: errBuffer, url: new URL('./pool-worker.js', import.meta.url).href },
  });
  worker.unref();
  workersStarted++;
  const slot: Slot = {
    worker,
    ctrl: new Int32Array(ctrlBuffer),
    err: new Uint8Array(errBuffer),
    scratch: new SharedArrayBuffer(0),
    seq: 0,
    exited: false,
  };
  // Failures are reported to the waiting call through the control block; these
  // events arrive later, on the event loop, and must not become uncaught errors.
  worker.on('error', () => {});
  worker.on('exit', () => {
    slot.exited = true;
  });
  return slot;
}

function retire(w: number): void {
  const slot = slots[w];
  slots[w] = undefined;
  if (slot !== undefined && !slot.exited) void slot.worker.terminate().catch(() => {});
}

function post(w: number, task: PoolTask): Slot {
  let slot = slots[w];
  if (slot !== undefined && (slot.exited || Atomics.load(slot.ctrl, CTRL.state) === STATE.dead)) {
    retire(w);
    slot = undefined;
  }
  if (slot === undefined) {
    slot = startSlot();
    slots[w] = slot;
  }
  const need = scratchLayout(task).bytes;
  if (slot.scratch.byteLength < need) slot.scratch = new SharedArrayBuffer(need);
  slot.seq = (slot.seq % 0x3fffffff) + 1;
  const message: PoolMessage = { seq: slot.seq, task, scratch: slot.scratch };
  slot.worker.postMessage(message);
  tasksPosted++;
  return slot;
}

/** What the worker wrote to its error buffer ("" when nothing). */
function errorText(slot: Slot): string {
  const length = Math.min(ERROR_BYTES, Atomics.load(slot.ctrl, CTRL.errLength));
  return new TextDecoder().decode(slot.err.slice(0, length));
}

/** Blocks until worker w has answered its current task; throws (and retires it) if it failed, died or timed out. */
function wait(w: number, slot: Slot): void {
  const { ctrl, seq } = slot;
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const v = Atomics.load(ctrl, CTRL.done);
    if (v === seq) return;
    if (v === -seq) {
      retire(w);
      throw new Error(`aggregation worker ${w} failed: ${errorText(slot)}`);
    }
    if (Atomics.load(ctrl, CTRL.state) === STATE.dead) {
      const why = errorText(slot);
      retire(w);
      throw new Error(`aggregation worker ${w} exited before finishing its range${why ? `: ${why}` : ''}`);
    }
    const left = deadline - performance.now();
    if (left <= 0) {
      retire(w);
      throw new Error(`aggregation worker ${w} did not finish its range within ${timeoutMs} ms`);
    }
    Atomics.wait(ctrl, CTRL.done, v, Math.min(50, left));
  }
}

/**
 * Runs tasks[w] on worker w and `mine` on this thread at the same time, waits
 * for all of them, then hands each worker's result to `collect` in order.
 * Throws the first failure (this thread's own first), after every worker has
 * stopped writing to its scratch.
 */
export function runShared(
  tasks: readonly PoolTask[],
  mine: () => void,
  collect: (w: number, result: SharedResult) => void,
): void {
  const posted: Slot[] = [];
  let failure: unknown;
  try {
    for (let w = 0; w < tasks.length; w++) posted.push(post(w, tasks[w]!));
    mine();
  } catch (err) {
    failure = err;
  }
  for (let w = 0; w < posted.length; w++) {
    try {
      wait(w, posted[w]!);
    } catch (err) {
      failure ??= err;
    }
  }
  if (failure !== undefined) throw failure;
  for (let w = 0; w < posted.length; w++) {
    const slot = posted[w]!;
    collect(w, resultViews(slot.scratch, tasks[w]!, Atomics.load(slot.ctrl, CTRL.tieCount)));
  }
}

/**
 * Runs a kernel over coordinates [0, d) on `parts` threads (this one and
 * parts − 1 workers) that take chunks of coordinates as they go (ChunkJob).
 * `mine(c0, c1)` is called for the chunks this thread takes, writing into
 * `out` and adding to `used` itself; afterwards each worker's chunks of its
 * out are copied into `out` and its counts added to `used`. Returns the
 * workers' results in worker order, for their ties (each list ascending).
 */
export function runChunked(
  task: KernelTask,
  parts: number,
  out: Float32Array,
  used: Int32Array,
  mine: (c0: number, c1: number) => void,
): SharedResult[] {
  const { d } = task;
  // About eight chunks per thread (one with fixed chunks), on multiples of 64 coordinates.
  const fixed = !dynamicChunks;
  const chunk = Math.max(64, Math.ceil(d / ((fixed ? 1 : 8) * parts) / 64) * 64);
  const chunks = Math.ceil(d / chunk);
  const buffer = new SharedArrayBuffer(4 * (1 + chunks));
  const job = (index: number): ChunkJob => ({ buffer, chunk, chunks, index, fixed });
  const tasks = Array.from({ length: parts - 1 }, (_, w) => ({ ...task, c0: 0, c1: d, job: job(w + 1) }) as PoolTask);
  const owner = new Int32Array(buffer, 4, chunks);
  const theirs: SharedResult[] = [];
  runShared(
    tasks,
    () => forEachChunk({ c0: 0, c1: d, d, job: job(0) }, mine),
    (w, result) => {
      for (let c = 0; c < chunks; c++) {
        if (owner[c] !== w + 1) continue;
        const c0 = c * chunk;
        out.set(result.out.subarray(c0, Math.min(d, c0 + chunk)), c0);
        workerChunks++;
      }
      for (let i = 0; i < used.length; i++) used[i] += result.used[i]!;
      theirs.push(result);
    },
  );
  return theirs;
}

/** Stops the pool's workers (they are unref()'d, so this is only for tests and tidy shutdowns). */
export async function closePool(): Promise<void> {
  const all = slots.splice(0);
  await Promise.all(all.map((s) => (s === undefined || s.exited ? undefined : s.worker.terminate())));
}

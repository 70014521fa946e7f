// Data-parallel local training across a node's cores. TF.js's wasm backend runs
// one thread in Node (its threaded build does not start there), so a node with
// more cores trains with more replicas instead: the calling thread and
// threads − 1 worker threads each hold the model, take a share of every batch,
// and compute their part of the update; every replica then applies the sum of
// all parts, added in thread order on its backend. Replicas stay bit-identical,
// and a run with the same seed and thread count gives the same weights; a
// different thread count sums in a different order (float rounding differs).
//
// Steps are synchronised through SharedArrayBuffers and Atomics, not messages:
// a step of the 2NN takes about a millisecond, less than a message round trip
// costs when the event loop is busy. Workers are kept between calls (a node
// trains every round) and unref()'d, so they never hold a process open.
import { Worker } from 'node:worker_threads';
import type { Replica, ReplicaSetup, ShareResult } from './replicas.js';

/** Int32 slots of a worker's control block. */
const SEQ = 0; // bumped by the calling thread whenever it has something for the worker
const STEP = 1; // the step number to contribute to; stored last, after the share
const ROWS = 2;
const BATCH = 3;
const PARITY = 4; // which of the two sets of contribution buffers this step writes
const APPLY = 5; // 1 + the parity whose contributions to apply, 0 when none
const STATUS = 6;
const END = 7;
const ERROR_BYTES = 8;
const CONTROL_SLOTS = 9;

const PENDING = 0;
const DONE = 1;
const FAILED = 2;

const ERROR_CAPACITY = 4096;

/** The shared buffers between the calling thread and one worker. */
export interface StepChannel {
  control: Int32Array;
  /** This worker's thread index (the calling thread is 0). */
  index: number;
  x: Float32Array;
  y: Float32Array;
  /**
   * Every thread's contribution, by parity then thread. A step writes one
   * parity while the replicas may still be applying the other, so the
   * calling thread never waits for the workers' apply.
   */
  parts: [Float32Array[], Float32Array[]];
  /** The share's summed loss and correct count. */
  stats: Float64Array;
  error: Uint8Array;
}

export type WorkerMessage = { kind: 'ready' } | { kind: 'ended' } | { kind: 'failed'; message: string };

export interface BeginMessage {
  kind: 'begin';
  setup: ReplicaSetup;
  weights: Float32Array;
  backend: string;
  channel: StepChannel;
}

function sharedFloat32(length: number): Float32Array {
  return new Float32Array(new SharedArrayBuffer(4 * length));
}

function wake(control: Int32Array): void {
  Atomics.add(control, SEQ, 1);
  Atomics.notify(control, SEQ);
}

/**
 * The worker side: applies each step's summed contributions and computes its
 * share of the next, as the calling thread asks, until it ends the run.
 * Blocks the worker's thread throughout, which is the point: it has nothing
 * else to do, and an event-loop hop per step would cost more than the step on
 * small models.
 */
export function serveSteps(channel: StepChannel, replica: Replica): void {
  const { control } = channel;
  let seen = 0;
  let done = 0;
  for (;;) {
    Atomics.wait(control, SEQ, seen);
    seen = Atomics.load(control, SEQ);
    if (Atomics.load(control, END) === 1) return;
    try {
      const apply = Atomics.exchange(control, APPLY, 0);
      if (apply > 0) replica.apply(channel.parts[apply - 1]!);
      const step = Atomics.load(control, STEP);
      if (step === done) continue;
      done = step;
      const mine = channel.parts[control[PARITY]!]![channel.index]!;
      const rows = control[ROWS]!;
      if (rows > 0) {
        const share = replica.contribute(channel.x, channel.y, rows, control[BATCH]!, mine);
        channel.stats[0] = share.loss;
        channel.stats[1] = share.correct;
      } else {
        mine.fill(0);
        channel.stats.fill(0);
      }
      Atomics.store(control, STATUS, DONE);
    } catch (err) {
      const text = new TextEncoder().encode(err instanceof Error ? (err.stack ?? err.message) : String(err)).subarray(0, ERROR_CAPACITY);
      channel.error.set(text);
      control[ERROR_BYTES] = text.length;
      Atomics.store(control, STATUS, FAILED);
    }
    Atomics.notify(control, STATUS);
  }
}

/** Workers between runs, ready for the next. */
const idle: Worker[] = [];

function nextMessage(worker: Worker): Promise<WorkerMessage> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
    };
    const onMessage = (m: WorkerMessage) => {
      cleanup();
      resolve(m);
    };
    const onError = (err: Error) => {
      cleanup();
      reject(new Error(`a training worker failed: ${err.message}`));
    };
    const onExit = (code: number) => {
      cleanup();
      reject(new Error(`a training worker exited (code ${code})`));
    };
    worker.on('message', onMessage);
    worker.on('error', onError);
    worker.on('exit', onExit);
  });
}

function newWorker(): Worker {
  const worker = new Worker(new URL('./training-worker.js', import.meta.url));
  worker.unref();
  return worker;
}

interface Helper {
  worker: Worker;
  channel: StepChannel;
}

/**
 * One data-parallel training run: start, step per batch, end. The calling
 * thread's own replica is `main`; its weights are the run's result.
 */
export class DataParallel {
  private steps = 0;
  private ended = false;

  private constructor(
    private readonly main: Replica,
    private readonly helpers: Helper[],
    private readonly parts: [Float32Array[], Float32Array[]],
    private readonly width: number,
    private readonly classes: number,
  ) {}

  /**
   * Starts threads − 1 workers (reusing idle ones), each with a replica built
   * from `setup` and `weights` on `backend`, for batches of up to maxBatch.
   */
  static async start(main: Replica, setup: ReplicaSetup, weights: Float32Array, backend: string, threads: number, maxBatch: number): Promise<DataParallel> {
    const width = setup.featureShape.reduce((a, b) => a * b, 1);
    const maxShare = Math.ceil(maxBatch / threads);
    const partsOf = () => Array.from({ length: threads }, () => sharedFloat32(main.contributionSize));
    const parts: [Float32Array[], Float32Array[]] = [partsOf(), partsOf()];
    const helpers: Helper[] = [];
    const replies: Promise<WorkerMessage>[] = [];
    try {
      for (let k = 1; k < threads; k++) {
        const channel: StepChannel = {
          control: new Int32Array(new SharedArrayBuffer(4 * CONTROL_SLOTS)),
          index: k,
          x: sharedFloat32(maxShare * width),
          y: sharedFloat32(maxShare * setup.classes),
          parts,
          stats: new Float64Array(new SharedArrayBuffer(16)),
          error: new Uint8Array(new SharedArrayBuffer(ERROR_CAPACITY)),
        };
        const worker = idle.pop() ?? newWorker();
        helpers.push({ worker, channel });
        const begin: BeginMessage = { kind: 'begin', setup, weights, backend, channel };
        // Listening before posting: a reply that came while an earlier one was awaited would be lost.
        const reply = nextMessage(worker);
        reply.catch(() => {}); // awaited below, in order; this only keeps an early failure from counting as unhandled
        replies.push(reply);
        worker.postMessage(begin);
      }
      for (const pending of replies) {
        const reply = await pending;
        if (reply.kind !== 'ready') throw new Error(`a training worker could not start: ${reply.kind === 'failed' ? reply.message : reply.kind}`);
      }
    } catch (err) {
      for (const h of helpers) void h.worker.terminate();
      throw err;
    }
    return new DataParallel(main, helpers, parts, width, setup.classes);
  }

  get threads(): number {
    return 1 + this.helpers.length;
  }

  /** One SGD step on the first `size` examples of x and y (batch-major, one-hot). */
  step(x: Float32Array, y: Float32Array, size: number): ShareResult {
    const threads = this.threads;
    const parity = this.steps % 2;
    this.steps++;
    const base = Math.floor(size / threads);
    const extra = size % threads;
    const ownRows = base + (extra > 0 ? 1 : 0);
    let row = ownRows;
    this.helpers.forEach((h, i) => {
      const rows = base + (i + 1 < extra ? 1 : 0);
      const { channel } = h;
      channel.x.set(x.subarray(row * this.width, (row + rows) * this.width));
      channel.y.set(y.subarray(row * this.classes, (row + rows) * this.classes));
      row += rows;
      const c = channel.control;
      // A failed apply of the previous step leaves FAILED here; the replica is then stale.
      if (Atomics.load(c, STATUS) === FAILED) this.fail(h);
      c[ROWS] = rows;
      c[BATCH] = size;
      c[PARITY] = parity;
      c[STATUS] = PENDING;
      Atomics.store(c, STEP, this.steps);
      wake(c);
    });
    const started = performance.now();
    const result = this.main.contribute(x, y, ownRows, size, this.parts[parity][0]!);
    // A worker's share is no larger than this thread's; far longer means it is stuck.
    const patience = Math.max(60_000, 50 * (performance.now() - started));
    for (const h of this.helpers) {
      this.awaitStep(h, patience);
      result.loss += h.channel.stats[0]!;
      result.correct += h.channel.stats[1]!;
    }
    for (const h of this.helpers) {
      Atomics.store(h.channel.control, APPLY, parity + 1);
      wake(h.channel.control);
    }
    this.main.apply(this.parts[parity]);
    return result;
  }

  private awaitStep(h: Helper, patienceMs: number): void {
    const c = h.channel.control;
    const until = performance.now() + patienceMs;
    while (Atomics.load(c, STATUS) === PENDING) {
      const left = until - performance.now();
      if (left <= 0) {
        this.abort();
        throw new Error(`a training worker did not finish its share within ${Math.round(patienceMs / 1000)} s`);
      }
      Atomics.wait(c, STATUS, PENDING, Math.min(left, 1000));
    }
    if (Atomics.load(c, STATUS) === FAILED) this.fail(h);
  }

  private fail(h: Helper): never {
    const c = h.channel.control;
    const text = new TextDecoder().decode(h.channel.error.slice(0, c[ERROR_BYTES]));
    this.abort();
    throw new Error(`a training worker failed: ${text}`);
  }

  /** Stops the workers without waiting for them; they are not reused. */
  private abort(): void {
    this.ended = true;
    for (const h of this.helpers) void h.worker.terminate();
  }

  /** Ends the run; the workers free their replicas and return to the idle pool. */
  async end(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    const replies = this.helpers.map((h) => {
      const reply = nextMessage(h.worker);
      Atomics.store(h.channel.control, END, 1);
      wake(h.channel.control);
      return reply.then(
        (m) => (m.kind === 'ended' ? idle.push(h.worker) : void h.worker.terminate()),
        () => void h.worker.terminate(),
      );
    });
    await Promise.all(replies);
  }
}

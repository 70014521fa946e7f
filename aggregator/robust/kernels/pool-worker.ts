// A worker of the kernel pool (pool.ts): runs one coordinate range per
// message with the same kernels the calling thread uses, writes the result
// to the message's scratch buffer and signals the calling thread through the
// control block.
import { parentPort, workerData } from 'node:worker_threads';
import { closestRange, windowRange } from './coordinate.js';
import { weightedSumRange } from './vectors.js';
import { CTRL, ERROR_BYTES, forEachChunk, resultViews, STATE, type PoolMessage } from './pool.js';

const { ctrl: ctrlBuffer, err: errBuffer } = workerData as { ctrl: SharedArrayBuffer; err: SharedArrayBuffer };
const ctrl = new Int32Array(ctrlBuffer);
const err = new Uint8Array(errBuffer);

function signal(value: number): void {
  Atomics.store(ctrl, CTRL.done, value);
  Atomics.notify(ctrl, CTRL.done);
}

// Started by pool.ts's bootstrap, which marks the control block dead when this thread exits.
function run({ task, scratch }: PoolMessage): number {
  switch (task.kind) {
    case 'sum': {
      const { out } = resultViews(scratch, task);
      forEachChunk(task, (c0, c1) => weightedSumRange(task.updates, task.coeffs, c0, c1, out));
      return 0;
    }
    case 'window': {
      const r = resultViews(scratch, task);
      r.used.fill(0);
      let count = 0;
      forEachChunk(task, (c0, c1) =>
        windowRange(task.updates, task.lo, task.hi, c0, c1, r.out, r.used, (k, low, high) => {
          r.ties[count] = k;
          r.tieLow[count] = low;
          r.tieHigh[count] = high;
          count++;
        }),
      );
      return count;
    }
    case 'closest': {
      const r = resultViews(scratch, task);
      r.used.fill(0);
      let count = 0;
      forEachChunk(task, (c0, c1) =>
        closestRange(task.updates, task.beta, c0, c1, r.out, r.used, (k, med, cut, share) => {
          r.ties[count] = k;
          r.tieValues[3 * count] = med;
          r.tieValues[3 * count + 1] = cut;
          r.tieValues[3 * count + 2] = share;
          count++;
        }),
      );
      return count;
    }
    case 'throw':
      throw new Error('injected fault');
    case 'exit':
      process.exit(3);
    case 'spin': {
      const until = performance.now() + task.c1;
      while (performance.now() < until);
      return 0;
    }
  }
}

parentPort!.on('message', (message: PoolMessage) => {
  try {
    Atomics.store(ctrl, CTRL.tieCount, run(message));
    signal(message.seq);
  } catch (e) {
    const text = new TextEncoder().encode(e instanceof Error ? (e.stack ?? e.message) : String(e)).subarray(0, ERROR_BYTES);
    err.set(text);
    Atomics.store(ctrl, CTRL.errLength, text.length);
    signal(-message.seq);
  }
});

Atomics.store(ctrl, CTRL.state, STATE.ready);

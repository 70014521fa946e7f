// The worker pool behind the coordinate-wise kernels (aggregator/robust/kernels/pool.ts):
// split across threads, the mean, the median and the trimmed mean are bit for
// bit what one thread computes; inputs on ordinary buffers give the same
// result as on shared ones; a worker that fails or dies is an Error on the
// calling thread, not a hang; and the workers never keep a process alive.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { ChunkAssembler } from '../../../core/tensor-codec.js';
import { closestToMedian, type CoordinateUsage } from './coordinate.js';
import { bulyan } from '../bulyan.js';
import { coordinateMedian, trimmedMean, trimmedCount } from '../index.js';
import { weightedMean } from '../mean.js';
import { preFilter } from '../pre-filter.js';
import { closePool, poolStats, runShared, setPoolDynamicChunks, setPoolMinValues, setPoolTimeoutMs, setPoolWorkers } from './pool.js';
import type { AggregationResult } from '../verdict.js';
import { tieHeavyUpdates } from '../../../test/support/tie-heavy.js';

const here = path.dirname(fileURLToPath(import.meta.url));

test.after.always(() => closePool());

const updates = (n: number, d: number, seed: number, shared: boolean): Float32Array[] => tieHeavyUpdates(n, d, seed, { tieShare: 0.2, shared });

const bytes = (a: Float32Array | Float64Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** Aggregate and verdict weights/scores, compared as bits. */
function sameBits(t: import('ava').ExecutionContext, a: AggregationResult, b: AggregationResult, what: string): void {
  t.true(bytes(a.aggregate).equals(bytes(b.aggregate)), `${what}: aggregate`);
  t.deepEqual(
    a.verdicts.map((v) => [v.weight, v.score ?? null, v.verdict]),
    b.verdicts.map((v) => [v.weight, v.score ?? null, v.verdict]),
    `${what}: verdicts`,
  );
  // deepEqual treats −0 and +0 alike; the weights must match as bits too.
  t.true(bytes(Float64Array.from(a.verdicts, (v) => v.weight)).equals(bytes(Float64Array.from(b.verdicts, (v) => v.weight))), `${what}: weights`);
}

/** Bulyan's second stage as a result: its usage's weights and unused shares as verdict fields. */
function closest(us: Float32Array[], keep: number): AggregationResult {
  const u: CoordinateUsage = closestToMedian(us, keep);
  return {
    aggregate: u.aggregate,
    verdicts: Array.from(u.weight, (weight, i) => ({ verdict: 'kept' as const, weight, reason: '', score: u.unused[i]! })),
  };
}

function rules(n: number): [string, (us: Float32Array[]) => AggregationResult][] {
  const beta = n === 3 ? 1 / 3 : 0.2;
  const keep = Math.max(1, n - 2 * Math.floor(n / 4));
  return [
    ['mean', (us) => weightedMean(us, us.map((_, i) => 100 + (i % 7) * 10))],
    ['median', (us) => coordinateMedian(us)],
    [`trimmed β=${beta.toFixed(2)} (t=${trimmedCount(beta, n)})`, (us) => trimmedMean(us, beta)],
    [`closest to the median, keep ${keep}`, (us) => closest(us, keep)],
    ...(n >= 7 ? [['bulyan f=1', (us: Float32Array[]) => bulyan(us, 1)] as [string, (us: Float32Array[]) => AggregationResult]] : []),
  ];
}

test.serial('split across 1 and 3 workers, in fixed or taken chunks, every rule (mean, median, trimmed mean, Bulyan) is bit-identical to one thread', (t) => {
  const minBefore = setPoolMinValues(0);
  const workersBefore = setPoolWorkers(0);
  const dynamicBefore = setPoolDynamicChunks(true);
  const chunksBefore = poolStats().workerChunks;
  try {
    for (const n of [1, 3, 10, 33, 100]) {
      for (const d of [4099, 12_347, 70_001]) {
        const us = updates(n, d, 7 * n + d, true);
        for (const [name, rule] of rules(n)) {
          setPoolWorkers(0);
          const one = rule(us);
          for (const w of [1, 3]) {
            for (const dynamic of [false, true]) {
              setPoolWorkers(w);
              setPoolDynamicChunks(dynamic);
              const before = poolStats();
              const split = rule(us);
              const after = poolStats();
              t.is(after.tasks - before.tasks, w, `${name} n=${n} d=${d}: ${w} worker tasks`);
              // One fixed chunk per thread: every worker did its share.
              if (!dynamic) t.is(after.workerChunks - before.workerChunks, w, `${name} n=${n} d=${d}: ${w} worker chunks`);
              sameBits(t, split, one, `${name} n=${n} d=${d} workers=${w} ${dynamic ? 'taken' : 'fixed'} chunks`);
            }
          }
        }
      }
    }
    t.log(`worker chunks: ${poolStats().workerChunks - chunksBefore}`);
  } finally {
    setPoolMinValues(minBefore);
    setPoolWorkers(workersBefore);
    setPoolDynamicChunks(dynamicBefore);
  }
});

test.serial('updates on shared and on ordinary buffers give identical results', (t) => {
  const minBefore = setPoolMinValues(0);
  const workersBefore = setPoolWorkers(Math.max(1, setPoolWorkers(0)));
  try {
    for (const n of [3, 10, 100]) {
      const d = 10_001;
      const shared = updates(n, d, n, true);
      const plain = updates(n, d, n, false);
      for (const [name, rule] of rules(n)) sameBits(t, rule(shared), rule(plain), `${name} n=${n}`);
    }
  } finally {
    setPoolMinValues(minBefore);
    setPoolWorkers(workersBefore);
  }
});

test.serial('the aggregator assembles updates on shared memory, which the pool reads in place', (t) => {
  const d = 70_001;
  const source = updates(1, d, 5, false)[0]!;
  const a = new ChunkAssembler(4 * d, 65536, { shared: true });
  const raw = bytes(source);
  for (let at = 0; at < raw.length; at += 65536) a.push(raw.subarray(at, at + 65536));
  const u = a.finish();
  t.is(Object.prototype.toString.call(u.buffer), '[object SharedArrayBuffer]');
  t.true(bytes(u).equals(raw));
  const plain = new ChunkAssembler(8, 8);
  plain.push(new Uint8Array(8));
  t.is(Object.prototype.toString.call(plain.finish().buffer), '[object ArrayBuffer]');
});

test.serial('updates clipped by the pre-filter stay on shared memory, so the round keeps the pool', (t) => {
  const us = updates(3, 1000, 9, true);
  const out = preFilter(us, [1, 1, 1], { clip_norm: 1 });
  t.true(out.notes.every((note) => note?.kind === 'clipped'));
  for (const u of out.updates) t.is(Object.prototype.toString.call(u.buffer), '[object SharedArrayBuffer]');
});

test.serial('a worker that throws or exits is an Error on the calling thread, and the next call gets a fresh worker', (t) => {
  const minBefore = setPoolMinValues(0);
  const workersBefore = setPoolWorkers(Math.max(1, setPoolWorkers(0)));
  try {
    const range = { c0: 0, c1: 1, d: 1, n: 1 };
    let mine = 0;
    t.throws(() => runShared([{ kind: 'throw', ...range }], () => mine++, () => {}), { message: /worker 0 failed: Error: injected fault/ });
    t.is(mine, 1, 'the calling thread did its own share');
    const started = poolStats().started;
    t.throws(() => runShared([{ kind: 'exit', ...range }], () => {}, () => {}), { message: /worker 0 exited/ });
    t.is(poolStats().started, started + 1, 'the failed worker was replaced');
    const us = updates(10, 5000, 3, true);
    const after = coordinateMedian(us);
    setPoolWorkers(0);
    sameBits(t, after, coordinateMedian(us), 'median after the failures');
  } finally {
    setPoolMinValues(minBefore);
    setPoolWorkers(workersBefore);
  }
});

test.serial('a worker that does not answer in time is an Error, not a hang, and is replaced', (t) => {
  const workersBefore = setPoolWorkers(Math.max(1, setPoolWorkers(0)));
  const timeoutBefore = setPoolTimeoutMs(300);
  try {
    const started = poolStats().started;
    t.throws(() => runShared([{ kind: 'spin', c0: 0, c1: 60_000, d: 1, n: 1 }], () => {}, () => {}), {
      message: /worker 0 did not finish its range within 300 ms/,
    });
    // The replacement starts from scratch (loading its modules can take longer than 300 ms on a busy machine).
    setPoolTimeoutMs(timeoutBefore);
    let mine = 0;
    runShared([{ kind: 'spin', c0: 0, c1: 1, d: 1, n: 1 }], () => mine++, () => {});
    t.is(mine, 1);
    t.is(poolStats().started, started + 1, 'the stuck worker was replaced');
  } finally {
    setPoolWorkers(workersBefore);
    setPoolTimeoutMs(timeoutBefore);
  }
});

test.serial('round after round, the pool keeps one scratch buffer per worker, grown only for a larger round', (t) => {
  const minBefore = setPoolMinValues(0);
  const workersBefore = setPoolWorkers(1);
  try {
    const big = updates(10, 20_000, 1, true);
    const small = updates(10, 5_000, 2, true);
    coordinateMedian(big);
    const after = poolStats().scratchBytes;
    t.true(after > 0);
    for (let round = 0; round < 20; round++) {
      coordinateMedian(round % 2 ? big : small);
      trimmedMean(small, 0.2);
      weightedMean(big, big.map(() => 1));
    }
    t.is(poolStats().scratchBytes, after);
    coordinateMedian(updates(10, 40_000, 3, true));
    t.true(poolStats().scratchBytes > after, 'a larger round replaces the scratch');
  } finally {
    setPoolMinValues(minBefore);
    setPoolWorkers(workersBefore);
  }
});

test('a process that used the pool exits by itself', (t) => {
  const script = `
    import { coordinateMedian } from ${JSON.stringify(path.join(here, '../median.js'))};
    import { poolStats, setPoolWorkers } from ${JSON.stringify(path.join(here, './pool.js'))};
    setPoolWorkers(1);
    const d = 1 << 20;
    const us = Array.from({ length: 4 }, (_, i) => new Float32Array(new SharedArrayBuffer(4 * d)).fill(i));
    const r = coordinateMedian(us);
    console.log(JSON.stringify({ value: r.aggregate[d - 1], ...poolStats() }));
  `;
  // A pool that kept the process alive would never let it exit: the generous kill timeout only
  // turns that hang into a failure before the test runner's own timeout.
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 150_000 });
  t.is(child.signal, null, 'killed: the pool kept the process alive');
  t.is(child.status, 0, child.stderr);
  t.like(JSON.parse(child.stdout), { value: 1.5, tasks: 1, started: 1 });
});

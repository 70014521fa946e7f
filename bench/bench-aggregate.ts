// `npm run bench:aggregate`: how fast the robust aggregation kernels run, for
// n ∈ {10, 100} updates of the 2NN (199,210) and CNN (1,663,370) sizes, against
// the machine's memory bandwidth measured in the same run and the plain-TS
// baselines in MEASURED.md ("Aggregation kernels").
//
//   node dist/bench/bench-aggregate.js [--quick] [--n=10,100] [--d=199210,1663370]
//                                             [--kernels=mean,median,...] [--repeats=3]
//
// --quick runs d = 199,210 only. Effective GB/s counts the update data once
// (n·d·4 bytes) over the kernel's time, whatever the kernel does with it.
//
// The updates are assembled the way the aggregator assembles received ones
// (ChunkAssembler with shared: true, fed in DEFAULT_CHUNK_BYTES chunks), so
// the kernels split large rounds across the worker pool (aggregator/robust/
// pool.ts) as they do in a real round. For the kernels with a target, the
// same inputs are also timed on the calling thread alone (pool off), in the
// same run.
import os from 'node:os';
import { bulyan } from '../aggregator/robust/bulyan.js';
import { centeredClipping } from '../aggregator/robust/centered-clipping.js';
import { closestToMedian } from '../aggregator/robust/kernels/coordinate.js';
import { geometricMedian } from '../aggregator/robust/geometric-median.js';
import { krum, multiKrum } from '../aggregator/robust/krum.js';
import { weightedMean } from '../aggregator/robust/mean.js';
import { coordinateMedian } from '../aggregator/robust/median.js';
import { preFilter } from '../aggregator/robust/pre-filter.js';
import { trimmedMean } from '../aggregator/robust/trimmed-mean.js';
import { setPoolWorkers } from '../aggregator/robust/kernels/pool.js';
import { ChunkAssembler, DEFAULT_CHUNK_BYTES } from '../core/tensor-codec.js';

const SIZES = [199_210, 1_663_370];
const COUNTS = [10, 100];
/** The share of measured memory bandwidth the streaming kernels should reach. */
const TARGET_SHARE = 0.3;

interface Kernel {
  readonly name: string;
  /** MEASURED.md's plain-TS baseline in ms, keyed `${n}x${d}`. */
  readonly baseline?: Readonly<Record<string, number>>;
  /** Whether the ≥ 30%-of-bandwidth target applies. */
  readonly target?: boolean;
  /** Also timed with the worker pool off (always done for kernels with a target). */
  readonly compare?: boolean;
  readonly run: (updates: Float32Array[], examples: number[], center: Float32Array) => unknown;
}

const baseline = (a: number, b: number, c: number, e: number) => ({
  [`10x${SIZES[0]}`]: a,
  [`100x${SIZES[0]}`]: b,
  [`10x${SIZES[1]}`]: c,
  [`100x${SIZES[1]}`]: e,
});

const KERNELS: readonly Kernel[] = [
  { name: 'pre-filter (length, finite, norms)', run: (u, e) => preFilter(u, e, { max_norm: 1e9 }) },
  { name: 'mean', baseline: baseline(4.5, 36, 47, 401), target: true, run: (u, e) => weightedMean(u, e) },
  { name: 'median', baseline: baseline(31, 391, 248, 2965), target: true, run: (u) => coordinateMedian(u) },
  { name: 'trimmed mean β=0.1', baseline: baseline(32, 411, 278, 5250), target: true, run: (u) => trimmedMean(u, 0.1) },
  { name: 'krum', baseline: baseline(12, 1224, 102, 12627), run: (u) => krum(u, Math.floor((u.length - 3) / 2)) },
  { name: 'multi-krum m=n/2', run: (u) => multiKrum(u, Math.floor((u.length - 3) / 2), u.length >> 1) },
  { name: 'bulyan', compare: true, run: (u) => bulyan(u, Math.floor((u.length - 3) / 4)) },
  {
    name: 'bulyan stage 2 (closest to median)',
    compare: true,
    run: (u) => closestToMedian(u, u.length - 2 * Math.floor((u.length - 3) / 4)),
  },
  {
    name: 'geometric median, 10 steps',
    baseline: baseline(64, 853, 880, 12713),
    run: (u, e) => geometricMedian(u, e, { maxIterations: 10, smoothing: 1e-6, tolerance: 0 }),
  },
  {
    name: 'centered clipping τ=10, 3 steps',
    baseline: baseline(25, 279, 275, 3769),
    run: (u, _e, c) => centeredClipping(u, { tau: 10, iterations: 3, center: c }),
  },
];

function arg(name: string): string | undefined {
  const prefix = `--${name}=`;
  return process.argv.find((a) => a.startsWith(prefix))?.slice(prefix.length);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/**
 * Median of `repeats` runs, plus two more for kernels under half a second
 * (the machine is shared; more runs steady the median); fewer once 8 s are spent.
 */
function time(fn: () => unknown, repeats: number): number {
  const ms: number[] = [];
  let spent = 0;
  for (let r = 0; r < repeats + 2; r++) {
    if (r >= repeats && spent / r > 500) break;
    if (r > 0 && spent > 8000) break;
    const t0 = performance.now();
    fn();
    const t = performance.now() - t0;
    ms.push(t);
    spent += t;
  }
  return median(ms);
}

/** Seeded xorshift32 in [−0.5, 0.5): random but identical on every run. */
function fillRandom(a: Float32Array, seed: number): void {
  let s = seed >>> 0 || 1;
  for (let j = 0; j < a.length; j++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    a[j] = (s >>> 0) / 4294967296 - 0.5;
  }
}

function gbps(bytes: number, ms: number): number {
  return bytes / ms / 1e6;
}

/** The machine's memory bandwidth, measured on arrays far larger than the caches. */
function measureBandwidth(repeats: number): { read: number; copy: number; copyTraffic: number; jsRead: number } {
  const floats = 32 * 1024 * 1024; // 128 MiB per array
  const a = new Float32Array(floats);
  const b = new Float32Array(floats);
  fillRandom(a, 1);
  b.set(a);
  const bytes = floats * 4;
  const bufA = Buffer.from(a.buffer);
  const bufB = Buffer.from(b.buffer);
  // Native streaming read of two arrays (memcmp over equal data).
  const read = gbps(2 * bytes, time(() => bufA.compare(bufB), repeats + 2));
  // Native copy: bytes read per second, and read + written.
  const copyMs = time(() => b.set(a), repeats + 2);
  // A JS read-sum with four accumulators: what a plain loop gets.
  const jsMs = time(() => {
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (let j = 0; j < floats; j += 4) {
      s0 += a[j]!;
      s1 += a[j + 1]!;
      s2 += a[j + 2]!;
      s3 += a[j + 3]!;
    }
    return s0 + s1 + s2 + s3;
  }, repeats + 2);
  return { read, copy: gbps(bytes, copyMs), copyTraffic: gbps(2 * bytes, copyMs), jsRead: gbps(bytes, jsMs) };
}

function pad(s: string, width: number, right = false): string {
  return right ? s.padStart(width) : s.padEnd(width);
}

function main(): void {
  const quick = process.argv.includes('--quick');
  const sizes = arg('d')?.split(',').map(Number) ?? (quick ? [SIZES[0]!] : SIZES);
  const counts = arg('n')?.split(',').map(Number) ?? COUNTS;
  const only = arg('kernels')?.split(',');
  const repeats = Number(arg('repeats') ?? 3);
  const kernels = only ? KERNELS.filter((k) => only.some((o) => k.name.startsWith(o))) : KERNELS;

  // The machine is shared: the load says how much the figures below can be trusted.
  const load = () => os.loadavg().map((x) => x.toFixed(2)).join(' / ');
  console.log(`Load average (1 / 5 / 15 min) at the start: ${load()} on ${os.cpus().length} CPUs`);
  const bw = measureBandwidth(repeats);
  const reference = Math.max(bw.read, bw.copy);
  console.log('Memory bandwidth (this run, arrays of 128 MiB):');
  console.log(`  native read (Buffer.compare of two arrays): ${bw.read.toFixed(2)} GB/s`);
  console.log(`  native copy (TypedArray.set):               ${bw.copy.toFixed(2)} GB/s read, ${bw.copyTraffic.toFixed(2)} GB/s read + write`);
  console.log(`  JS read-sum loop (4 accumulators):          ${bw.jsRead.toFixed(2)} GB/s`);
  console.log(
    `  reference for the target: the best native read rate, ${reference.toFixed(2)} GB/s; ` +
      `${TARGET_SHARE * 100}% of it is ${(TARGET_SHARE * reference).toFixed(2)} GB/s\n`,
  );

  const poolWorkers = setPoolWorkers(0);
  setPoolWorkers(poolWorkers);
  console.log(`Worker pool: ${poolWorkers} worker(s) + the calling thread (os.availableParallelism() = ${os.availableParallelism()})\n`);
  const header =
    `${pad('kernel', 36)} ${pad('n × d', 15)} ${pad('ms', 9, true)} ${pad('GB/s', 6, true)} ` +
    `${pad('baseline', 9, true)} ${pad('speed-up', 8, true)} ${pad('1-thread ms', 11, true)} ${pad('GB/s', 6, true)}  target (≥ ${TARGET_SHARE * 100}% of ${reference.toFixed(1)} GB/s)`;
  console.log(header);
  console.log('-'.repeat(header.length));
  const maxN = Math.max(...counts);
  for (const d of sizes) {
    const source = new Float32Array(d);
    const all = Array.from({ length: maxN }, (_, i) => {
      // As the aggregator receives an update: chunks pushed into a shared buffer.
      fillRandom(source, 1000 + i);
      const assembler = new ChunkAssembler(4 * d, DEFAULT_CHUNK_BYTES, { shared: true });
      const bytes = new Uint8Array(source.buffer);
      for (let at = 0; at < bytes.length; at += DEFAULT_CHUNK_BYTES) assembler.push(bytes.subarray(at, at + DEFAULT_CHUNK_BYTES));
      return assembler.finish();
    });
    const center = new Float32Array(d);
    for (const n of counts) {
      const updates = all.slice(0, n);
      const examples = updates.map((_, i) => 100 + (i % 7) * 10);
      const bytes = n * d * 4;
      for (const k of kernels) {
        // Warm the JIT on a slice first, so the figures are steady-state.
        const slice = updates.map((u) => u.subarray(0, 16384));
        for (let w = 0; w < 3; w++) k.run(slice, examples, center.subarray(0, 16384));
        let single = '';
        if (k.target || k.compare) {
          setPoolWorkers(0);
          const ms1 = time(() => k.run(updates, examples, center), repeats);
          setPoolWorkers(poolWorkers);
          single = `${pad(ms1.toFixed(1), 11, true)} ${pad(gbps(bytes, ms1).toFixed(2), 6, true)}`;
        } else {
          single = `${pad('–', 11, true)} ${pad('', 6, true)}`;
        }
        // Pooled warm-up too: a worker compiles its own copy of a wasm kernel on first use and
        // runs it unoptimised until V8's tier-up lands (trimmed mean at 100 × 199,210: three
        // calls of 23–29 ms, then 17–19 ms). Rounds reuse the kernel; steady state is measured.
        const warmStart = performance.now();
        for (let w = 0; w < 4 && (w === 0 || performance.now() - warmStart < 1500); w++) k.run(updates, examples, center);
        const ms = time(() => k.run(updates, examples, center), repeats);
        const rate = gbps(bytes, ms);
        const base = k.baseline?.[`${n}x${d}`];
        const target = k.target
          ? `${rate >= TARGET_SHARE * reference ? 'MET' : 'MISSED'} (${rate.toFixed(2)} vs ${(TARGET_SHARE * reference).toFixed(2)} GB/s)`
          : '';
        console.log(
          `${pad(k.name, 36)} ${pad(`${n} × ${d}`, 15)} ${pad(ms.toFixed(1), 9, true)} ${pad(rate.toFixed(2), 6, true)} ` +
            `${pad(base === undefined ? '–' : base.toFixed(0), 9, true)} ${pad(base === undefined ? '–' : `${(base / ms).toFixed(1)}×`, 8, true)} ${single}  ${target}`,
        );
      }
    }
  }
  console.log(`\nLoad average (1 / 5 / 15 min) at the end: ${load()}`);
  console.log('ms: median of 3–5 runs after a warm-up. GB/s: the update data (n·d·4 bytes) over that time.');
  console.log('baseline: MEASURED.md "Aggregation kernels" (plain TS, one thread, medians of 3), ms.');
  console.log('1-thread: the same inputs with the worker pool off (setPoolWorkers(0)), timed just before the pooled run.');
}

main();

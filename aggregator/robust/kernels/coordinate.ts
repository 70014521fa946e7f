// The coordinate-wise kernels behind the median, the trimmed mean and
// Bulyan's second stage, and the verdicts they share.
//
// The median and the trimmed mean (rankWindow) run in WebAssembly SIMD
// (rank-window.ts), four coordinates per pass; the ties at a window's edge
// are shared out here. Both split large rounds on shared memory into
// coordinate ranges across the worker pool (pool.ts). Bulyan's second stage
// (closestToMedian) is still scalar: coordinates are processed in blocks, a block of every update is
// gathered into contiguous, coordinate-major scratch buffers (each
// coordinate's n values side by side, as floats and as order-preserving int32
// keys), then each coordinate's order statistics are found there
// (order-statistics.ts: sorting networks for small n, branch-free quickselect
// above), and one more pass over its n values sums the kept ones and credits
// each update.
//
// An update's share of a coordinate is 1/m when its value is one of the m
// values averaged there, 0 when it was trimmed; values tied at the edge of the
// kept window share the window's remaining places equally (the aggregate does
// not depend on which of equal values is kept, so neither does the verdict).

import { percent } from '../format.js';
import { weightedSum } from './vectors.js';
import { keyOfBits, keyToFloat, NETWORK_MAX, networkSelect, selected, selectFloat, selectPair } from './order-statistics.js';
import { windowKernel } from './rank-window.js';
import { parallelParts, runChunked, type SharedResult } from './pool.js';
import { checkSameLength, type Verdict } from '../verdict.js';

export interface CoordinateUsage {
  readonly aggregate: Float32Array;
  /** Per update: its share of the aggregate, averaged over coordinates (the shares sum to 1). */
  readonly weight: Float64Array;
  /** Per update: the fraction of coordinates where it had no share (trimmed or unused). */
  readonly unused: Float64Array;
}

/** Coordinates per block: the two scratch columns (8 bytes per value) stay in L2. */
function blockFor(n: number): number {
  return Math.max(32, Math.min(4096, Math.floor(65536 / Math.max(1, n))));
}

/** Scratch for one block: floats and keys, coordinate-major. */
interface Columns {
  readonly values: Float32Array;
  readonly bits: Int32Array;
  readonly keys: Int32Array;
}

function columns(n: number, B: number): Columns {
  const values = new Float32Array(B * n);
  return { values, bits: new Int32Array(values.buffer), keys: new Int32Array(B * n) };
}

/**
 * bits[k·n + i] = the bits of updates[i][b0 + k], keys[k·n + i] = their key,
 * for k < len; four updates at a time so four streams are in flight.
 */
function gather(cols: Columns, views: readonly Int32Array[], b0: number, len: number): void {
  const n = views.length;
  const { bits, keys } = cols;
  let i = 0;
  for (; i + 3 < n; i += 4) {
    const u0 = views[i]!, u1 = views[i + 1]!, u2 = views[i + 2]!, u3 = views[i + 3]!;
    for (let k = 0, p = i, j = b0; k < len; k++, p += n, j++) {
      const a = u0[j]!, b = u1[j]!, c = u2[j]!, e = u3[j]!;
      bits[p] = a;
      bits[p + 1] = b;
      bits[p + 2] = c;
      bits[p + 3] = e;
      keys[p] = keyOfBits(a);
      keys[p + 1] = keyOfBits(b);
      keys[p + 2] = keyOfBits(c);
      keys[p + 3] = keyOfBits(e);
    }
  }
  for (; i < n; i++) {
    const u = views[i]!;
    for (let k = 0, p = i, j = b0; k < len; k++, p += n, j++) {
      const a = u[j]!;
      bits[p] = a;
      keys[p] = keyOfBits(a);
    }
  }
}

function bitViews(updates: readonly Float32Array[]): Int32Array[] {
  return updates.map((u) => new Int32Array(u.buffer, u.byteOffset, u.length));
}

/**
 * Coordinate-wise: sort each coordinate's n values and average the ones at
 * sorted positions [lo, hi). The median is lo = ⌊(n−1)/2⌋, hi = n − lo; the
 * β-trimmed mean lo = ⌊βn⌋, hi = n − lo. Inputs must be finite.
 *
 * Runs in WebAssembly SIMD (rank-window.ts), block by block: each block of
 * every update is copied into the kernel's memory, where it stays in cache
 * for the kernel's two passes. Large rounds whose updates sit on
 * SharedArrayBuffers (as the aggregator assembles them) are split into
 * coordinate ranges shared with the worker pool (pool.ts); the result is
 * bit-identical to one thread's: every coordinate gets the same operations,
 * the per-update counts are integers, and coordinates with ties at the
 * window's edge are resolved here, in coordinate order, either way.
 */
export function rankWindow(updates: readonly Float32Array[], lo: number, hi: number): CoordinateUsage {
  const d = checkSameLength(updates);
  const n = updates.length;
  if (!(Number.isInteger(lo) && Number.isInteger(hi) && 0 <= lo && lo < hi && hi <= n)) {
    throw new RangeError(`rank window [${lo}, ${hi}) is not inside [0, ${n})`);
  }
  const m = hi - lo;
  if (m === n) {
    // Nothing trimmed: the plain (unweighted) mean, every update used everywhere.
    return usage(weightedSum(updates, new Float64Array(n).fill(1 / n)), new Int32Array(n).fill(d), new Float64Array(n), n, d);
  }
  const used = new Int32Array(n);
  const extra = new Float64Array(n);
  const out = new Float32Array(d);
  if (d === 0) return usage(out, used, extra, m, d);
  const column = new Float32Array(n);
  const resolve = (k: number, low: number, high: number) => {
    for (let i = 0; i < n; i++) column[i] = updates[i]![k]!;
    out[k] = windowWithTies(column, 0, n, lo, hi, low, high, extra);
  };
  const parts = parallelParts(updates, d);
  if (parts <= 1) {
    windowRange(updates, lo, hi, 0, d, out, used, resolve);
    return usage(out, used, extra, m, d);
  }
  // Chunks of coordinates on the pool and this thread; the ties of every chunk
  // are resolved here afterwards, merged into one ascending order.
  const mine: number[] = [];
  const theirs = runChunked({ kind: 'window', updates, lo, hi, c0: 0, c1: d, d, n }, parts, out, used, (c0, c1) =>
    windowRange(updates, lo, hi, c0, c1, out, used, (k, low, high) => void mine.push(k, low, high)),
  );
  mergeTies(mine, 3, theirs, (list, t) => (list === undefined ? resolve(mine[3 * t]!, mine[3 * t + 1]!, mine[3 * t + 2]!) : resolve(list.ties[t]!, list.tieLow[t]!, list.tieHigh[t]!)));
  return usage(out, used, extra, m, d);
}

/**
 * The rank-window kernel over coordinates [c0, c1): out[j] for those j (out
 * indexed like the updates; coordinates with ties at the window's edge get a
 * provisional value and are passed to `tie` in ascending order with their two
 * edge values), and each update's count of coordinates where it was inside
 * the window added to used.
 */
export function windowRange(
  updates: readonly Float32Array[],
  lo: number,
  hi: number,
  c0: number,
  c1: number,
  out: Float32Array,
  used: Int32Array,
  tie: (k: number, low: number, high: number) => void,
): void {
  const n = updates.length;
  if (c1 <= c0) return;
  const { layout, run, memory } = windowKernel(n, lo, hi);
  const { B } = layout;
  const buffer = memory.buffer;
  const heap = new Float32Array(buffer);
  const low = new Float32Array(buffer, layout.low, B);
  const high = new Float32Array(buffer, layout.high, B);
  const sums = new Float32Array(buffer, layout.out, B);
  const lanes = new Int32Array(buffer, layout.used, 4 * n);
  const ties = new Int32Array(buffer, layout.ties, B);
  lanes.fill(0);
  for (let b0 = c0; b0 < c1; b0 += B) {
    const len = Math.min(B, c1 - b0);
    for (let i = 0; i < n; i++) heap.set(len === updates[i]!.length ? updates[i]! : updates[i]!.subarray(b0, b0 + len), i * B);
    const tied = run(len);
    out.set(len === B ? sums : sums.subarray(0, len), b0);
    for (let t = 0; t < tied; t++) {
      const k = ties[t]!;
      tie(b0 + k, low[k]!, high[k]!);
    }
  }
  for (let i = 0; i < n; i++) used[i] += lanes[4 * i]! + lanes[4 * i + 1]! + lanes[4 * i + 2]! + lanes[4 * i + 3]!;
}

/**
 * A coordinate where values equal to the window's edge values also lie
 * outside it: the tied values share the window's places at that edge.
 * `extra` (in units of 1/m) corrects the 1 the main pass counted for each of them.
 */
function windowWithTies(
  values: Float32Array,
  base: number,
  n: number,
  lo: number,
  hi: number,
  vLo: number,
  vHi: number,
  extra: Float64Array,
): number {
  const m = hi - lo;
  let below = 0, atLo = 0, atHi = 0, above = 0, strict = 0;
  for (let i = 0; i < n; i++) {
    const x = values[base + i]!;
    if (x < vLo) below++;
    else if (x > vHi) above++;
    else if (x === vLo) atLo++;
    else if (x === vHi) atHi++;
    else strict += x;
  }
  if (vLo === vHi) {
    const share = m / atLo - 1;
    for (let i = 0; i < n; i++) if (values[base + i] === vLo) extra[i] += share;
    return vLo;
  }
  const keptLo = below + atLo - lo;
  const keptHi = above + atHi - (n - hi);
  const shareLo = keptLo / atLo - 1;
  const shareHi = keptHi / atHi - 1;
  for (let i = 0; i < n; i++) {
    const x = values[base + i];
    if (x === vLo) extra[i] += shareLo;
    else if (x === vHi) extra[i] += shareHi;
  }
  return (strict + vLo * keptLo + vHi * keptHi) / m;
}

/**
 * Bulyan's second stage (El Mhamdi et al. 2018): per coordinate, the mean of
 * the `beta` values closest to the coordinate's median (the mean of the two
 * middle values when n is even). Values tied at the cut-off distance share
 * the remaining places. Inputs must be finite.
 */
export function closestToMedian(updates: readonly Float32Array[], beta: number): CoordinateUsage {
  const d = checkSameLength(updates);
  const n = updates.length;
  if (!(Number.isInteger(beta) && beta >= 1 && beta <= n)) throw new RangeError(`cannot keep ${beta} of ${n} values`);
  if (beta === n) {
    return usage(weightedSum(updates, new Float64Array(n).fill(1 / n)), new Int32Array(n).fill(d), new Float64Array(n), n, d);
  }
  const used = new Int32Array(n);
  const extra = new Float64Array(n);
  const out = new Float32Array(d);
  // A coordinate with more values at the cut-off distance than places left: they share them.
  const share = (k: number, med: number, cut: number, part: number) => {
    for (let i = 0; i < n; i++) if (Math.abs(updates[i]![k]! - med) === cut) extra[i] += part - 1;
  };
  const parts = parallelParts(updates, d);
  if (parts <= 1) {
    closestRange(updates, beta, 0, d, out, used, share);
    return usage(out, used, extra, beta, d);
  }
  // As rankWindow: chunks on the pool, shared places credited here in coordinate order.
  const mine: number[] = [];
  const theirs = runChunked({ kind: 'closest', updates, beta, c0: 0, c1: d, d, n }, parts, out, used, (c0, c1) =>
    closestRange(updates, beta, c0, c1, out, used, (k, med, cut, part) => void mine.push(k, med, cut, part)),
  );
  mergeTies(mine, 4, theirs, (list, t) =>
    list === undefined
      ? share(mine[4 * t]!, mine[4 * t + 1]!, mine[4 * t + 2]!, mine[4 * t + 3]!)
      : share(list.ties[t]!, list.tieValues[3 * t]!, list.tieValues[3 * t + 1]!, list.tieValues[3 * t + 2]!),
  );
  return usage(out, used, extra, beta, d);
}

/**
 * Bulyan's second stage over coordinates [c0, c1): out[j] for those j (out
 * indexed like the updates), each update's count of coordinates where it was
 * among the kept values added to used, and, for coordinates where values at
 * the cut-off distance share the last places, `share(k, median, cut, share)`
 * in ascending order of k.
 */
export function closestRange(
  updates: readonly Float32Array[],
  beta: number,
  c0: number,
  c1: number,
  out: Float32Array,
  used: Int32Array,
  share: (k: number, med: number, cut: number, share: number) => void,
): void {
  const n = updates.length;
  if (c1 <= c0) return;
  const B = blockFor(n);
  const cols = columns(n, B);
  const { values, keys } = cols;
  const views = bitViews(updates);
  const a = new Int32Array(n);
  const b = new Int32Array(n);
  const k1 = (n - 1) >> 1;
  const k2 = n >> 1;
  const network = n <= NETWORK_MAX ? networkSelect(n, k1 === k2 ? [k1] : [k1, k2]) : undefined;
  const ends = new Int32Array(2);
  const dist = new Float64Array(n);
  const distA = new Float64Array(n);
  const distB = new Float64Array(n);

  for (let b0 = c0; b0 < c1; b0 += B) {
    const len = Math.min(B, c1 - b0);
    gather(cols, views, b0, len);
    for (let k = 0, base = 0; k < len; k++, base += n) {
      let med: number;
      if (network !== undefined) {
        network(keys, base, ends);
        med = k1 === k2 ? keyToFloat(ends[0]!) : (keyToFloat(ends[0]!) + keyToFloat(ends[1]!)) / 2;
      } else {
        selectPair(keys, base, n, k1, k2, a, b);
        med = (keyToFloat(selected.low) + keyToFloat(selected.high)) / 2;
      }
      for (let i = 0; i < n; i++) {
        const r = Math.abs(values[base + i]! - med);
        dist[i] = r;
        distA[i] = r;
      }
      const cut = selectFloat(distA, distB, n, beta - 1);
      let sumIn = 0, inside = 0, sumAt = 0, at = 0;
      for (let i = 0; i < n; i++) {
        const x = values[base + i]!;
        const r = dist[i]!;
        const c = +(r < cut);
        const e = +(r === cut);
        sumIn += x * c;
        sumAt += x * e;
        inside += c;
        at += e;
        used[i] += c | e;
      }
      if (inside + at === beta) {
        out[b0 + k] = (sumIn + sumAt) / beta;
      } else {
        // More values at the cut-off distance than places left: they share them.
        const part = (beta - inside) / at;
        share(b0 + k, med, cut, part);
        out[b0 + k] = (sumIn + part * sumAt) / beta;
      }
    }
  }
}

/**
 * Visits the ties of this thread (`mine`, records of `stride` numbers, the
 * coordinate first) and of each worker's result, each list ascending, in one
 * ascending order of coordinate: the order one thread would have met them in.
 */
function mergeTies(
  mine: readonly number[],
  stride: number,
  theirs: readonly SharedResult[],
  visit: (list: SharedResult | undefined, t: number) => void,
): void {
  const lists = theirs.length + 1;
  const next = new Int32Array(lists);
  const count = (l: number) => (l === 0 ? mine.length / stride : theirs[l - 1]!.tieCount);
  const key = (l: number) => (l === 0 ? mine[stride * next[0]!]! : theirs[l - 1]!.ties[next[l]!]!);
  for (;;) {
    let best = -1;
    for (let l = 0; l < lists; l++) if (next[l]! < count(l) && (best < 0 || key(l) < key(best))) best = l;
    if (best < 0) return;
    visit(best === 0 ? undefined : theirs[best - 1], next[best]!);
    next[best]!++;
  }
}

function usage(aggregate: Float32Array, used: Int32Array, extra: Float64Array, m: number, d: number): CoordinateUsage {
  const n = used.length;
  const weight = new Float64Array(n);
  const unused = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    weight[i] = d === 0 ? 1 / n : (used[i]! + extra[i]!) / (m * d);
    unused[i] = d === 0 ? 0 : (d - used[i]!) / d;
  }
  return { aggregate, weight, unused };
}

// ---------------------------------------------------------------------------
// Verdicts for coordinate-wise rules.

/**
 * 'kept' from half a fair share (0.5/n) up, 'down-weighted' below it,
 * 'not-selected' at 0 (a coordinate-wise rule uses some values of each
 * coordinate by construction: that is no evidence); score = the fraction of coordinates where it was `what`
 * (trimmed, unused).
 */
export function coordinateVerdicts(usage: CoordinateUsage, what: string): Verdict[] {
  const n = usage.weight.length;
  const fair = 1 / n;
  const verdicts: Verdict[] = [];
  for (let i = 0; i < n; i++) {
    const weight = usage.weight[i]!;
    const unused = usage.unused[i]!;
    const reason = `${what} in ${percent(unused)} of coordinates; share ${percent(weight)} of the aggregate (a fair share is ${percent(fair)})`;
    const verdict = weight === 0 ? 'not-selected' : weight >= 0.5 * fair ? 'kept' : 'down-weighted';
    verdicts.push({ verdict, weight, reason, score: unused });
  }
  return verdicts;
}

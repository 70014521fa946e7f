// Dense kernels shared by the robust aggregators: weighted sums, norms,
// distances and the Gram matrix of a round's updates.
//
// Every kernel walks the coordinates in blocks and, inside a block, reads
// several updates side by side. Each value of every update is then read from
// memory once per pass, accumulators stay in cache, and a JS loop keeps
// several independent streams in flight, which is what lets it get near the
// machine's memory bandwidth (a one-update-at-a-time loop reaches well under
// half of it). Weighted sums read ten updates per sweep through loops
// generated once per group size (below SIMD_SUM_MAX updates they run in
// WebAssembly SIMD instead); the Gram matrix reuses each block from cache in
// 3×3 register tiles. Accumulation is in float64 throughout.

import { parallelParts, runChunked } from './pool.js';
import { simdWeightedSumRange } from './weighted-sum.js';

/** A weighted sum counts nothing per update. */
const NO_COUNTS = new Int32Array(0);

/** Coordinates per block for streaming kernels: accumulators (float64) stay in L1/L2. */
const STREAM_BLOCK = 8192;

/** Coordinates per block for kernels that re-read a block of every update (Gram): n·B·4 bytes stay in L2. */
function reuseBlock(n: number): number {
  return Math.max(256, Math.min(8192, Math.floor((768 * 1024) / (4 * Math.max(1, n)))));
}

/** Updates read side by side in one sweep of a weighted sum. */
const GROUP = 10;

/**
 * One sweep of a weighted sum over coordinates [b0, b1) for the updates
 * i .. i + G − 1:  DST = PREV + Σ cᵢ·uᵢ[j], where DST is acc[k] (float64
 * scratch, k = j − b0), out[j] (the float32 result) or v[j] (a float64
 * vector), and PREV is nothing, acc[k] or base·v[j].
 */
type Sweep = (
  acc: Float64Array,
  out: Float32Array,
  v: Float64Array,
  base: number,
  updates: readonly Float32Array[],
  coeffs: Float64Array,
  i: number,
  b0: number,
  b1: number,
) => void;

type SweepFrom = 'none' | 'acc' | 'v';
type SweepTo = 'acc' | 'out' | 'v';

const sweeps = new Map<string, Sweep>();

/**
 * The sweep for G updates, compiled once to a loop with the G streams and
 * weights in locals: a loop over a variable number of streams would reload
 * them per element, and splitting G into fixed-size passes adds a load and
 * store of the accumulator per pass, which is what limits small n.
 */
function sweep(G: number, from: SweepFrom, to: SweepTo): Sweep {
  const id = `${G}:${from}:${to}`;
  let fn = sweeps.get(id);
  if (fn === undefined) {
    const lines = ['const len = b1 - b0;'];
    for (let q = 0; q < G; q++) lines.push(`const u${q} = updates[i + ${q}], c${q} = coeffs[i + ${q}];`);
    const terms = Array.from({ length: G }, (_, q) => `c${q} * u${q}[j]`);
    const half = Math.ceil(G / 2);
    const sum = G <= 1 ? (terms[0] ?? '0') : `(${terms.slice(0, half).join(' + ')}) + (${terms.slice(half).join(' + ')})`;
    const prev = { none: '', acc: 'acc[k] + ', v: 'base * v[j] + ' }[from];
    const dst = { acc: 'acc[k]', out: 'out[j]', v: 'v[j]' }[to];
    const usesAcc = from === 'acc' || to === 'acc';
    lines.push(
      usesAcc
        ? `for (let k = 0, j = b0; k < len; k++, j++) ${dst} = ${prev}${sum};`
        : `for (let j = b0; j < b1; j++) ${dst} = ${prev}${sum};`,
    );
    // Generated from G and the two modes above only: no input reaches the source text.
    fn = new Function('acc', 'out', 'v', 'base', 'updates', 'coeffs', 'i', 'b0', 'b1', `'use strict';\n${lines.join('\n')}`) as Sweep;
    sweeps.set(id, fn);
  }
  return fn;
}

/**
 * DST[j] = [base·v[j] +] Σᵢ cᵢ·uᵢ[j] over coordinates [b0, b1), accumulated in
 * float64, GROUP updates per sweep; the first sweep starts the sum, the last
 * one writes it to its destination, the ones between accumulate in acc.
 */
function weightedSumBlock(
  acc: Float64Array,
  out: Float32Array,
  v: Float64Array,
  base: number,
  withV: boolean,
  to: 'out' | 'v',
  updates: readonly Float32Array[],
  coeffs: Float64Array,
  b0: number,
  b1: number,
): void {
  const n = updates.length;
  if (n === 0) {
    sweep(0, withV ? 'v' : 'none', to)(acc, out, v, base, updates, coeffs, 0, b0, b1);
    return;
  }
  for (let i = 0; i < n; i += GROUP) {
    const G = Math.min(GROUP, n - i);
    const from: SweepFrom = i > 0 ? 'acc' : withV ? 'v' : 'none';
    sweep(G, from, i + G >= n ? to : 'acc')(acc, out, v, base, updates, coeffs, i, b0, b1);
  }
}

/**
 * Up to this many updates the weighted sum runs in WebAssembly SIMD
 * (weighted-sum.ts); above it, in the JS sweeps below. The SIMD kernel has to
 * copy every block into its memory first; at n = 10 it still wins (1.4
 * against 1.9 ms at d = 199,210, 15.5 against 16.5 ms at d = 1,663,370),
 * at n = 40 the two are level and at n = 100 the sweeps, which read the
 * updates in place, are ahead (152 against 170 ms at d = 1,663,370).
 */
const SIMD_SUM_MAX = 32;

/** Σᵢ cᵢ·uᵢ, accumulated in float64, rounded once to float32. */
export function weightedSum(updates: readonly Float32Array[], coefficients: ArrayLike<number>): Float32Array {
  const d = updates.length === 0 ? 0 : updates[0]!.length;
  if (d === 0) return new Float32Array(0);
  const coeffs = Float64Array.from(coefficients);
  const out = new Float32Array(d);
  const parts = parallelParts(updates, d);
  if (parts <= 1) {
    weightedSumRange(updates, coeffs, 0, d, out);
    return out;
  }
  // Chunks of coordinates on the pool's workers and this thread: per coordinate the same
  // operations in the same order as on one thread, so the result is bit-identical.
  runChunked({ kind: 'sum', updates, coeffs, c0: 0, c1: d, d, n: updates.length }, parts, out, NO_COUNTS, (c0, c1) =>
    weightedSumRange(updates, coeffs, c0, c1, out),
  );
  return out;
}

/**
 * out[j] = Σᵢ cᵢ·uᵢ[j] for j ∈ [c0, c1) (out indexed like the updates),
 * accumulated in float64 and rounded once: WebAssembly SIMD up to
 * SIMD_SUM_MAX updates, the JS sweeps above it. Which kernel runs depends on
 * n only, and each coordinate's sum is the same wherever a range starts.
 */
export function weightedSumRange(updates: readonly Float32Array[], coeffs: Float64Array, c0: number, c1: number, out: Float32Array): void {
  if (c1 <= c0) return;
  if (updates.length <= SIMD_SUM_MAX) {
    simdWeightedSumRange(updates, coeffs, c0, c1, out);
    return;
  }
  const acc = new Float64Array(Math.min(STREAM_BLOCK, c1 - c0));
  const none = new Float64Array(0);
  for (let b0 = c0; b0 < c1; b0 += STREAM_BLOCK) {
    weightedSumBlock(acc, out, none, 0, false, 'out', updates, coeffs, b0, Math.min(c1, b0 + STREAM_BLOCK));
  }
}

/** Σⱼ uᵢ[j]² for every update, in float64; non-finite values make the result non-finite. */
export function squaredNorms(updates: readonly Float32Array[]): Float64Array {
  const n = updates.length;
  const out = new Float64Array(n);
  let i = 0;
  // Four updates at a time: four streams in flight.
  for (; i + 3 < n; i += 4) {
    const u0 = updates[i]!, u1 = updates[i + 1]!, u2 = updates[i + 2]!, u3 = updates[i + 3]!;
    const d = Math.min(u0.length, u1.length, u2.length, u3.length);
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (let j = 0; j < d; j++) {
      const a = u0[j]!, b = u1[j]!, c = u2[j]!, e = u3[j]!;
      s0 += a * a;
      s1 += b * b;
      s2 += c * c;
      s3 += e * e;
    }
    out[i] = s0 + tailSquares(u0, d);
    out[i + 1] = s1 + tailSquares(u1, d);
    out[i + 2] = s2 + tailSquares(u2, d);
    out[i + 3] = s3 + tailSquares(u3, d);
  }
  for (; i < n; i++) out[i] = tailSquares(updates[i]!, 0);
  return out;
}

function tailSquares(u: Float32Array, from: number): number {
  let s0 = 0, s1 = 0;
  let j = from;
  for (; j + 1 < u.length; j += 2) {
    const a = u[j]!, b = u[j + 1]!;
    s0 += a * a;
    s1 += b * b;
  }
  if (j < u.length) s0 += u[j]! * u[j]!;
  return s0 + s1;
}

/**
 * The weighted-sum step of an iterative rule fused with the distance pass of
 * the next step, in one read of the updates:
 *   v ← base·v + Σᵢ cᵢ·uᵢ   (v in float64, updated in place), then
 *   dist2[i] = ‖uᵢ − v‖²  for the new v.
 * With `coeffs` undefined, v is left as it is and only the distances are
 * computed; with `dist2` undefined, only the step is taken.
 */
export function stepAndDistances(
  updates: readonly Float32Array[],
  v: Float64Array,
  coefficients: ArrayLike<number> | undefined,
  base: number,
  dist2: Float64Array | undefined,
): void {
  const coeffs = coefficients === undefined ? undefined : Float64Array.from(coefficients);
  const n = updates.length;
  const d = v.length;
  const B = reuseBlock(n);
  const acc = new Float64Array(Math.min(B, d));
  const none = new Float32Array(0);
  dist2?.fill(0);
  for (let b0 = 0; b0 < d; b0 += B) {
    const b1 = Math.min(d, b0 + B);
    if (coeffs !== undefined) weightedSumBlock(acc, none, v, base, true, 'v', updates, coeffs, b0, b1);
    if (dist2 === undefined) continue;
    // The block of every update is still in cache: distances to the new v.
    let i = 0;
    for (; i + 3 < n; i += 4) {
      const u0 = updates[i]!, u1 = updates[i + 1]!, u2 = updates[i + 2]!, u3 = updates[i + 3]!;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let j = b0; j < b1; j++) {
        const x = v[j]!;
        const a = u0[j]! - x, b = u1[j]! - x, c = u2[j]! - x, e = u3[j]! - x;
        s0 += a * a;
        s1 += b * b;
        s2 += c * c;
        s3 += e * e;
      }
      dist2[i] += s0;
      dist2[i + 1] += s1;
      dist2[i + 2] += s2;
      dist2[i + 3] += s3;
    }
    for (; i < n; i++) {
      const u = updates[i]!;
      let s = 0;
      for (let j = b0; j < b1; j++) {
        const a = u[j]! - v[j]!;
        s += a * a;
      }
      dist2[i] += s;
    }
  }
}

/**
 * G[i·n + j] = uᵢ·uⱼ (float64, symmetric, full n×n), computed blockwise over
 * the coordinates: a block of every update stays in L2 while 3×3 tiles of
 * dot products are accumulated in registers, so each value is fetched from
 * memory once and reused from cache for the n/3 tiles of its row. The last
 * n mod 3 rows are done as 3×1 / 3×2 tiles against each group of three.
 */
export function gramMatrix(updates: readonly Float32Array[]): Float64Array {
  const n = updates.length;
  const d = n === 0 ? 0 : updates[0]!.length;
  const G = new Float64Array(n * n);
  const B = reuseBlock(n);
  const n3 = n - (n % 3);
  for (let b0 = 0; b0 < d; b0 += B) {
    const b1 = Math.min(d, b0 + B);
    for (let i = 0; i < n3; i += 3) {
      const a0 = updates[i]!, a1 = updates[i + 1]!, a2 = updates[i + 2]!;
      for (let j = i; j < n3; j += 3) {
        const c0 = updates[j]!, c1 = updates[j + 1]!, c2 = updates[j + 2]!;
        let s00 = 0, s01 = 0, s02 = 0, s10 = 0, s11 = 0, s12 = 0, s20 = 0, s21 = 0, s22 = 0;
        for (let k = b0; k < b1; k++) {
          const x0 = a0[k]!, x1 = a1[k]!, x2 = a2[k]!;
          const y0 = c0[k]!, y1 = c1[k]!, y2 = c2[k]!;
          s00 += x0 * y0;
          s01 += x0 * y1;
          s02 += x0 * y2;
          s10 += x1 * y0;
          s11 += x1 * y1;
          s12 += x1 * y2;
          s20 += x2 * y0;
          s21 += x2 * y1;
          s22 += x2 * y2;
        }
        const r0 = i * n + j, r1 = r0 + n, r2 = r1 + n;
        G[r0] += s00;
        G[r0 + 1] += s01;
        G[r0 + 2] += s02;
        G[r1] += s10;
        G[r1 + 1] += s11;
        G[r1 + 2] += s12;
        G[r2] += s20;
        G[r2 + 1] += s21;
        G[r2 + 2] += s22;
      }
      // This group of three against the one or two rows left over.
      if (n3 < n) {
        const c0 = updates[n3]!, c1 = updates[n - 1]!;
        let s00 = 0, s01 = 0, s10 = 0, s11 = 0, s20 = 0, s21 = 0;
        for (let k = b0; k < b1; k++) {
          const x0 = a0[k]!, x1 = a1[k]!, x2 = a2[k]!;
          const y0 = c0[k]!, y1 = c1[k]!;
          s00 += x0 * y0;
          s01 += x0 * y1;
          s10 += x1 * y0;
          s11 += x1 * y1;
          s20 += x2 * y0;
          s21 += x2 * y1;
        }
        G[i * n + n3] += s00;
        G[(i + 1) * n + n3] += s10;
        G[(i + 2) * n + n3] += s20;
        if (n - n3 === 2) {
          G[i * n + n3 + 1] += s01;
          G[(i + 1) * n + n3 + 1] += s11;
          G[(i + 2) * n + n3 + 1] += s21;
        }
      }
    }
    // The leftover rows among themselves.
    for (let i = n3; i < n; i++) {
      for (let j = i; j < n; j++) {
        const a = updates[i]!, c = updates[j]!;
        let s = 0;
        for (let k = b0; k < b1; k++) s += a[k]! * c[k]!;
        G[i * n + j] += s;
      }
    }
  }
  // The tiles filled the upper triangle (and a little of the lower, on the diagonal); mirror the upper one.
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) G[j * n + i] = G[i * n + j]!;
  return G;
}

/** D[i·n + j] = ‖uᵢ − uⱼ‖² from the Gram matrix (‖a‖² + ‖b‖² − 2a·b, clamped at 0; D[i·n + i] = 0). */
export function squaredDistancesFromGram(G: Float64Array, n: number): Float64Array {
  const D = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const v = Math.max(0, G[i * n + i]! + G[j * n + j]! - 2 * G[i * n + j]!);
      D[i * n + j] = v;
      D[j * n + i] = v;
    }
  }
  return D;
}

/** Pairwise squared distances of the updates (n×n, float64), via the blocked Gram matrix. */
export function pairwiseSquaredDistances(updates: readonly Float32Array[]): Float64Array {
  return squaredDistancesFromGram(gramMatrix(updates), updates.length);
}

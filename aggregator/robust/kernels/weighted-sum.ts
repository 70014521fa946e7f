// Σᵢ cᵢ·uᵢ in WebAssembly SIMD, generated at run time for each n: the mean,
// and the average the other rules take of the updates they keep.
//
// Same vertical layout as the rank-window kernel (rank-window.ts): a block of
// every update is copied into linear memory as n rows, and each v128 load
// holds four coordinates of one update. Each value is widened to float64
// (two f64x2 per load) and accumulated there, so the result is the float64
// sum rounded once to float32, as before; only the order of the additions
// (four rows summed before they join the running sum, which keeps the chain
// of dependent adds short) differs from a left-to-right sum.

import { FunctionBuilder, instantiate, moduleBytes, pagesFor, type Kernel } from './wasm-encoder.js';

/** Rows summed before joining the running sum. */
const SUM_GROUP = 4;

export interface SumLayout {
  readonly n: number;
  /** Coordinates per block, a multiple of 4. */
  readonly B: number;
  /** Row i (B float32) starts at i·B·4; then n float64 coefficients; then B float32 results. */
  readonly coefficients: number;
  readonly out: number;
  readonly bytes: number;
}

export function sumLayout(n: number): SumLayout {
  // The n rows (4·n·B bytes) stay in L2 between the copy that fills them and the pass that reads them.
  const B = Math.max(64, Math.min(16384, Math.floor(131072 / n))) & ~3;
  const coefficients = n * B * 4;
  const out = coefficients + n * 8;
  return { n, B, coefficients, out, bytes: out + B * 4 };
}

/** The module's bytes: `run(len)` writes Σᵢ cᵢ·rowᵢ[j] for j < len (rounded up to 4) to the out region. */
export function sumModule(layout: SumLayout): Uint8Array {
  const { n, B } = layout;
  const f = new FunctionBuilder(['i32'], []);
  const len = 0;
  const p = f.local('i32');
  const end = f.local('i32');
  const x = f.local('v128');
  const c = f.local('v128');
  const w0 = f.local('v128');
  const w1 = f.local('v128');
  const part0 = f.local('v128');
  const part1 = f.local('v128');
  const acc0 = f.local('v128');
  const acc1 = f.local('v128');
  const zero = new Uint8Array(16);
  const highHalf = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15];
  const joinLow = [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23];

  // p walks the block's byte offsets, 16 (four coordinates) at a time, up to 4·len.
  f.i32(0).set(p).get(len).i32(2).op('i32.shl').set(end);
  f.op('block').op('loop');
  f.get(p).get(end).op('i32.ge_s').branch('br_if', 1);
  f.v128(zero).set(acc0).v128(zero).set(acc1);
  for (let i0 = 0; i0 < n; i0 += SUM_GROUP) {
    for (let i = i0; i < Math.min(n, i0 + SUM_GROUP); i++) {
      f.get(p).memory('v128.load', i * B * 4).set(x);
      f.i32(0).load64Splat(layout.coefficients + i * 8).set(c);
      f.get(x).simd('f64x2.promote_low_f32x4').get(c).simd('f64x2.mul').set(w0);
      f.get(x).get(x).shuffle(highHalf).simd('f64x2.promote_low_f32x4').get(c).simd('f64x2.mul').set(w1);
      if (i > i0) f.get(part0).get(w0).simd('f64x2.add').set(part0).get(part1).get(w1).simd('f64x2.add').set(part1);
      else f.get(w0).set(part0).get(w1).set(part1);
    }
    f.get(acc0).get(part0).simd('f64x2.add').set(acc0).get(acc1).get(part1).simd('f64x2.add').set(acc1);
  }
  f.get(p);
  f.get(acc0).simd('f32x4.demote_f64x2_zero').get(acc1).simd('f32x4.demote_f64x2_zero').shuffle(joinLow);
  f.memory('v128.store', layout.out);
  f.get(p).i32(16).op('i32.add').set(p);
  f.branch('br', 0);
  f.op('end').op('end');
  return moduleBytes(f, pagesFor(layout.bytes));
}

const kernels = new Map<number, Kernel & { readonly layout: SumLayout }>();

function sumKernel(n: number): Kernel & { readonly layout: SumLayout } {
  let kernel = kernels.get(n);
  if (kernel === undefined) {
    const layout = sumLayout(n);
    kernel = { layout, ...instantiate(sumModule(layout), layout.bytes) };
    kernels.set(n, kernel);
  }
  return kernel;
}

/** Σᵢ cᵢ·uᵢ over updates of one length d ≥ 1, accumulated in float64, rounded once to float32. */
export function simdWeightedSum(updates: readonly Float32Array[], coefficients: ArrayLike<number>, d: number): Float32Array {
  const out = new Float32Array(d);
  simdWeightedSumRange(updates, coefficients, 0, d, out);
  return out;
}

/**
 * out[j] = Σᵢ cᵢ·uᵢ[j] for the coordinates j ∈ [c0, c1) only (out is indexed
 * like the updates). Each coordinate gets the same operations in the same
 * order wherever the range starts, so ranges done apart (on other threads)
 * join into exactly the whole-vector result.
 */
export function simdWeightedSumRange(
  updates: readonly Float32Array[],
  coefficients: ArrayLike<number>,
  c0: number,
  c1: number,
  out: Float32Array,
): void {
  const n = updates.length;
  const { layout, run, memory } = sumKernel(n);
  const { B } = layout;
  const buffer = memory.buffer;
  const heap = new Float32Array(buffer);
  new Float64Array(buffer, layout.coefficients, n).set(coefficients);
  const sums = new Float32Array(buffer, layout.out, B);
  for (let b0 = c0; b0 < c1; b0 += B) {
    const len = Math.min(B, c1 - b0);
    for (let i = 0; i < n; i++) heap.set(len === updates[i]!.length ? updates[i]! : updates[i]!.subarray(b0, b0 + len), i * B);
    run(len);
    out.set(len === B ? sums : sums.subarray(0, len), b0);
  }
}

// The rank-window kernel (coordinate-wise median and trimmed mean) in
// WebAssembly SIMD, generated at run time for each (n, lo, hi).
//
// Layout is vertical: a block of B coordinates of every update is copied into
// linear memory as n rows, and one v128 load at coordinate j of row i holds
// coordinates j..j+3 of update i. A selection network across the n vectors
// (compare-exchange = f32x4.pmin + f32x4.pmax, i.e. minps/maxps) then finds
// the window's edge values for four coordinates at once, with no transposition
// and no branches. The network is emitted as straight-line code (see
// emitNetwork for which values live in registers); a module assembled ahead
// of time could only interpret a comparator list, paying an index load per
// compare-exchange, which is why the module is generated here per (n, lo, hi)
// (wasm-encoder.ts) and not assembled from a .wat file at build time.
//
// A second pass over the same rows (still in cache) compares every value with
// its coordinate's two edge values: the ones inside are summed (in float64,
// in groups of four updates, so the result can differ from a plain
// left-to-right float64 sum only in float64's last bits) and counted per
// update and per coordinate. Coordinates whose count is not the window size
// have values tied at an edge outside the window; the kernel lists them and
// the caller shares the tied places out (rare on real updates, so that part
// stays scalar).

import { liveOutputs, selectionNetwork } from './order-statistics.js';
import { FunctionBuilder, instantiate, moduleBytes, pagesFor, type WasmMemory } from './wasm-encoder.js';

/** Where a kernel's regions sit in linear memory (byte offsets) for blocks of B coordinates. */
export interface WindowLayout {
  readonly n: number;
  /** Coordinates per block, a multiple of 4. */
  readonly B: number;
  /** Row i (B float32) starts at i·B·4. */
  readonly rows: 0;
  /** Per coordinate of the block: the value at sorted position lo, and at hi − 1 (float32). */
  readonly low: number;
  readonly high: number;
  /** Per coordinate of the block: the aggregate (float32). */
  readonly out: number;
  /** Per update, four int32 lanes: how many coordinates (summed over the lanes) used it; accumulates over blocks. */
  readonly used: number;
  /** Indices (within the block) of coordinates with ties at the window's edge, int32. */
  readonly ties: number;
  /** Per sorted position, a v128 slot for network values that do not fit in registers. */
  readonly spill: number;
  readonly bytes: number;
}

/** Coordinates per block: the n rows (4·n·B bytes) stay well inside L2, next to the copy that fills them. */
export function windowLayout(n: number): WindowLayout {
  const B = Math.max(64, Math.min(16384, Math.floor(131072 / n))) & ~3;
  const rows = 0 as const;
  const low = n * B * 4;
  const high = low + B * 4;
  const out = high + B * 4;
  const used = out + B * 4;
  const ties = used + n * 16;
  const spill = ties + B * 4;
  return { n, B, rows, low, high, out, used, ties, spill, bytes: spill + n * 16 };
}

/**
 * Rows summed into a partial sum before it is added to the coordinate's
 * running sum: one long chain of float64 adds (4 cycles each) would cost more
 * than the rest of the pass at small n.
 */
const SUM_GROUP = 4;

/** Runs the kernel over coordinates [0, len) of the block in memory; returns how many coordinates had ties. */
export type WindowKernel = (len: number) => number;

interface CompiledWindow {
  readonly layout: WindowLayout;
  readonly run: WindowKernel;
  readonly memory: WasmMemory;
}

const kernels = new Map<string, CompiledWindow>();

/** The compiled kernel for n updates and window [lo, hi), and the memory it works in. */
export function windowKernel(n: number, lo: number, hi: number): CompiledWindow {
  const layout = windowLayout(n);
  const id = `${n}:${lo}:${hi}`;
  let kernel = kernels.get(id);
  if (kernel === undefined) {
    const { run, memory } = instantiate(windowModule(layout, lo, hi), layout.bytes);
    kernel = { layout, run, memory };
    kernels.set(id, kernel);
  }
  return kernel;
}

/**
 * v128 locals the network keeps its values in. V8 on x64 has 16 vector
 * registers and keeps some for itself and for the pmin result while pmax is
 * computed; with more locals than registers its allocator spills on its own
 * terms, and measured slower than spilling explicitly, ahead of time.
 */
const NETWORK_REGISTERS = 12;

/**
 * Emits the compare-exchanges with at most regs.length values in locals:
 * values are loaded from their rows at first use, and when a local is needed
 * the value whose next use is furthest away gives it up (Belady's rule, which
 * needs the whole sequence ahead of time: a network has it), stored to its
 * spill slot if it changed since it was loaded. With the comparators in
 * depth-first order (batcherNetwork's, also within a grid selection's column
 * and row sorts) most of them find both values in registers. Returns which
 * local holds each wanted position at the end.
 */
function emitNetwork(
  f: FunctionBuilder,
  p: number,
  layout: WindowLayout,
  pairs: readonly [number, number][],
  wanted: readonly number[],
  regs: readonly number[],
): Map<number, number> {
  const { n, B } = layout;
  const end = pairs.length;
  const uses: number[][] = Array.from({ length: n }, () => []);
  pairs.forEach(([a, b], k) => {
    uses[a]!.push(k);
    uses[b]!.push(k);
  });
  for (const w of wanted) uses[w]!.push(end);
  const nextIndex = new Int32Array(n);
  const nextUse = (x: number) => uses[x]![nextIndex[x]!] ?? Infinity;
  const slotOf = new Int32Array(n).fill(-1);
  const holder = new Array<number>(regs.length).fill(-1);
  const changed = new Uint8Array(n);
  const spilled = new Uint8Array(n);

  const bring = (x: number, keep: number) => {
    if (slotOf[x]! >= 0) return;
    let slot = holder.indexOf(-1);
    if (slot < 0) {
      let far = -1;
      holder.forEach((y, s) => {
        const u = y === keep ? -1 : nextUse(y);
        if (u > far) {
          far = u;
          slot = s;
        }
      });
      const y = holder[slot]!;
      if (changed[y] && far !== Infinity) {
        f.i32(0).get(regs[slot]!).memory('v128.store', layout.spill + 16 * y);
        spilled[y] = 1;
        changed[y] = 0;
      }
      slotOf[y] = -1;
    }
    if (spilled[x]) f.i32(0).memory('v128.load', layout.spill + 16 * x);
    else f.get(p).memory('v128.load', layout.rows + x * B * 4);
    f.set(regs[slot]!);
    slotOf[x] = slot;
    holder[slot] = x;
  };

  const live = liveOutputs(pairs, wanted);
  pairs.forEach(([a, b], k) => {
    bring(a, b);
    bring(b, a);
    nextIndex[a]!++;
    nextIndex[b]!++;
    const ra = regs[slotOf[a]!]!;
    const rb = regs[slotOf[b]!]!;
    // An output nothing reads later is not computed; its position's next use is then "never", so it is not spilled either.
    if (live[k]! & 2) f.get(ra).get(rb).simd('f32x4.pmax');
    if (live[k]! & 1) f.get(ra).get(rb).simd('f32x4.pmin').set(ra);
    if (live[k]! & 2) f.set(rb);
    changed[a] = 1;
    changed[b] = 1;
  });
  const at = new Map<number, number>();
  for (const w of wanted) {
    bring(w, wanted[0] === w ? wanted[wanted.length - 1]! : wanted[0]!);
    at.set(w, regs[slotOf[w]!]!);
  }
  return at;
}

function splatI32(x: number): Uint8Array {
  return new Uint8Array(Int32Array.of(x, x, x, x).buffer);
}

/** The module's bytes: `run(len) → ties`, see WindowKernel. */
export function windowModule(layout: WindowLayout, lo: number, hi: number): Uint8Array {
  const { n, B } = layout;
  const m = hi - lo;
  const f = new FunctionBuilder(['i32'], ['i32']);
  const len = 0;
  const j = f.local('i32');
  const p = f.local('i32');
  const tieAt = f.local('i32');
  const bits = f.local('i32');
  const regs = Array.from({ length: Math.min(n, NETWORK_REGISTERS) }, () => f.local('v128'));
  const vLo = f.local('v128');
  const vHi = f.local('v128');
  const kl = f.local('v128');
  const valid = f.local('v128');
  const inside = f.local('v128');
  const acc0 = f.local('v128');
  const acc1 = f.local('v128');
  const x = f.local('v128');
  const mask = f.local('v128');
  const xm = f.local('v128');
  const part0 = f.local('v128');
  const part1 = f.local('v128');
  const w0 = f.local('v128');
  const w1 = f.local('v128');

  const zero = new Uint8Array(16);
  const nan = splatI32(0x7fc00000);
  const iota = new Uint8Array(Int32Array.of(0, 1, 2, 3).buffer);
  const mDouble = new Uint8Array(Float64Array.of(m, m).buffer);
  // Lanes 2–3 of a v128 moved to lanes 0–1, for promote_low.
  const highHalf = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15];
  // Lanes 0–1 of each of two demoted halves, side by side.
  const joinLow = [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23];
  const wantLo = lo;
  const wantHi = hi - 1;

  f.i32(0).set(j).i32(0).set(p).i32(layout.ties).set(tieAt);
  f.op('block').op('loop');
  f.get(j).get(len).op('i32.ge_s').branch('br_if', 1);

  // pmin/pmax keep their first operand when the inputs compare equal, so a
  // −0 and a +0 meeting in a compare-exchange may come out as two −0s (or two
  // +0s): every output is still numerically the right order statistic, only
  // a zero's sign can differ. Adding +0 to the two edges turns −0 into +0,
  // which is what the scalar code's keys gave.
  const network = selectionNetwork(n, wantLo === wantHi ? [wantLo] : [wantLo, wantHi]);
  const atLo = network.at[0]!;
  const atHi = network.at[network.at.length - 1]!;
  const at = emitNetwork(f, p, layout, network.pairs, network.at, regs);
  f.get(at.get(atLo)!).set(vLo);
  f.get(at.get(atHi)!).set(vHi);
  f.get(vLo).v128(zero).simd('f32x4.add').set(vLo);
  f.get(vHi).v128(zero).simd('f32x4.add').set(vHi);
  f.get(p).get(vLo).memory('v128.store', layout.low);
  f.get(p).get(vHi).memory('v128.store', layout.high);

  // Lanes past len (the last block's tail) get a NaN low edge: no value compares ≥ it, so they count for nobody.
  f.get(j).simd('i32x4.splat').v128(iota).simd('i32x4.add').get(len).simd('i32x4.splat').simd('i32x4.lt_s').set(valid);
  f.get(vLo).v128(nan).get(valid).simd('v128.bitselect').set(kl);

  const summing = m > 2;
  f.v128(zero).set(inside);
  if (summing) f.v128(zero).set(acc0).v128(zero).set(acc1);
  for (let i0 = 0; i0 < n; i0 += SUM_GROUP) {
    const rows = Math.min(SUM_GROUP, n - i0);
    for (let i = i0; i < i0 + rows; i++) {
      f.get(p).memory('v128.load', layout.rows + i * B * 4).set(x);
      f.get(x).get(kl).simd('f32x4.ge').get(x).get(vHi).simd('f32x4.le').simd('v128.and').set(mask);
      // used[i] lanes −= mask (−1 where inside)
      f.i32(0).i32(0).memory('v128.load', layout.used + i * 16).get(mask).simd('i32x4.sub').memory('v128.store', layout.used + i * 16);
      f.get(inside).get(mask).simd('i32x4.sub').set(inside);
      if (summing) {
        f.get(x).get(mask).simd('v128.and').tee(xm).simd('f64x2.promote_low_f32x4').set(w0);
        f.get(xm).get(xm).shuffle(highHalf).simd('f64x2.promote_low_f32x4').set(w1);
        if (i > i0) f.get(part0).get(w0).simd('f64x2.add').set(part0).get(part1).get(w1).simd('f64x2.add').set(part1);
        else f.get(w0).set(part0).get(w1).set(part1);
      }
    }
    if (summing) f.get(acc0).get(part0).simd('f64x2.add').set(acc0).get(acc1).get(part1).simd('f64x2.add').set(acc1);
  }

  // The aggregate: the edge value itself, the mean of the two edges, or the window's sum over m.
  f.get(p);
  if (m === 1) {
    f.get(vLo);
  } else {
    if (summing) {
      f.get(acc0);
    } else {
      f.get(vLo).simd('f64x2.promote_low_f32x4').get(vHi).simd('f64x2.promote_low_f32x4').simd('f64x2.add');
    }
    f.v128(mDouble).simd('f64x2.div').simd('f32x4.demote_f64x2_zero');
    if (summing) {
      f.get(acc1);
    } else {
      f.get(vLo).get(vLo).shuffle(highHalf).simd('f64x2.promote_low_f32x4');
      f.get(vHi).get(vHi).shuffle(highHalf).simd('f64x2.promote_low_f32x4').simd('f64x2.add');
    }
    f.v128(mDouble).simd('f64x2.div').simd('f32x4.demote_f64x2_zero');
    f.shuffle(joinLow);
  }
  f.memory('v128.store', layout.out);

  // Coordinates where the count inside the window is not m: list them.
  f.get(inside).v128(splatI32(m)).simd('i32x4.ne').get(valid).simd('v128.and').tee(mask).simd('v128.any_true');
  f.op('if');
  f.get(mask).simd('i32x4.bitmask').set(bits);
  for (let l = 0; l < 4; l++) {
    f.get(tieAt).get(j).i32(l).op('i32.add').storeI32(0);
    f.get(tieAt).get(bits).i32(l).op('i32.shr_u').i32(1).op('i32.and').i32(2).op('i32.shl').op('i32.add').set(tieAt);
  }
  f.op('end');

  f.get(j).i32(4).op('i32.add').set(j);
  f.get(p).i32(16).op('i32.add').set(p);
  f.branch('br', 0);
  f.op('end').op('end');
  f.get(tieAt).i32(layout.ties).op('i32.sub').i32(2).op('i32.shr_u');
  return moduleBytes(f, pagesFor(layout.bytes));
}

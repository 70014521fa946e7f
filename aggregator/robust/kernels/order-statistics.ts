// Order statistics of one coordinate's n values, the inner loop of the
// coordinate-wise rules (median, trimmed mean, Bulyan).
//
// Values are compared as int32 keys that order like the floats: in JS an
// integer compare is cheaper than a float32 load, widening and compare, and
// it lets a compare-exchange be done with bit operations instead of a branch.
// On random data a branch on a comparison mispredicts about every other time,
// which costs more than everything else in these loops, so:
//  - small n (≤ NETWORK_MAX) go through a sorting network, generated once per
//    (n, wanted positions) as straight-line code over local variables with
//    branch-free compare-exchanges;
//  - larger n use quickselect with a branch-free partition: every value is
//    written to both ends of a second buffer and the matching end advances by
//    the comparison's 0/1.

/**
 * Up to this many values, sorting networks; above it, quickselect. Measured
 * per coordinate (median / 10%-trimmed ends): n = 20: 83 / 74 ns against
 * 199 / 250 ns; n = 48: 340 / 331 against 388 / 534; n = 64: 540 / 510 against
 * 477 / 674; by n = 100 the network's locals no longer fit in registers.
 */
export const NETWORK_MAX = 48;

const f32 = new Float32Array(1);
const i32 = new Int32Array(f32.buffer);

/**
 * The key of raw float32 bits: flips the magnitude bits of negative numbers
 * so that signed int32 order is float order; −0 becomes +0's key (0), so
 * equal floats have equal keys. NaNs must not occur.
 */
export function keyOfBits(b: number): number {
  const k = b ^ ((b >> 31) & 0x7fffffff);
  return k + +(k === -1);
}

export function keyToFloat(key: number): number {
  i32[0] = key ^ ((key >> 31) & 0x7fffffff);
  return f32[0]!;
}

function median3(x: number, y: number, z: number): number {
  if (x < y) return y < z ? y : x < z ? z : x;
  return x < z ? x : y < z ? z : y;
}

// ---------------------------------------------------------------------------
// Sorting networks.

/**
 * Batcher's odd–even merge sort for the next power of two ≥ n, with the
 * comparators that touch positions ≥ n dropped (those positions would hold
 * +∞ and never move). Each pair (a, b), a < b, puts the smaller value at a.
 * The comparators come in the recursive (depth-first) order: each small
 * sub-sort and sub-merge is finished before the next starts, so a code
 * generator can keep its few values in registers (rank-window.ts).
 */
export function batcherNetwork(n: number): [number, number][] {
  let size = 1;
  while (size < n) size *= 2;
  const pairs: [number, number][] = [];
  const compare = (a: number, b: number) => {
    if (b < n) pairs.push([a, b]);
  };
  // Merges the two sorted halves of the stride-r subsequence of [lo, lo + len):
  // its even and odd subsequences first, then neighbours.
  const merge = (lo: number, len: number, r: number): void => {
    const step = 2 * r;
    if (step < len) {
      merge(lo, len, step);
      merge(lo + r, len, step);
      for (let i = lo + r; i + r < lo + len; i += step) compare(i, i + r);
    } else {
      compare(lo, lo + r);
    }
  };
  const sort = (lo: number, len: number): void => {
    if (len > 1) {
      sort(lo, len / 2);
      sort(lo + len / 2, len / 2);
      merge(lo, len, 1);
    }
  };
  sort(0, size);
  return pairs;
}

/** The comparators that can influence the values ending at `wanted` positions. */
export function pruneNetwork(pairs: readonly [number, number][], wanted: readonly number[]): [number, number][] {
  const needed = new Set(wanted);
  const kept: [number, number][] = [];
  for (let q = pairs.length - 1; q >= 0; q--) {
    const [a, b] = pairs[q]!;
    if (needed.has(a) || needed.has(b)) {
      kept.push([a, b]);
      needed.add(a);
      needed.add(b);
    }
  }
  return kept.reverse();
}

/**
 * For each comparator of a network, which of its outputs is read later (by a
 * comparator or as a wanted result): bit 1 the smaller (at a), bit 2 the
 * larger (at b). A comparator with one dead output needs only one of min and
 * max; one with neither could be dropped (pruneNetwork drops them).
 */
export function liveOutputs(pairs: readonly (readonly [number, number])[], wanted: readonly number[]): Uint8Array {
  const live = new Set(wanted);
  const flags = new Uint8Array(pairs.length);
  for (let q = pairs.length - 1; q >= 0; q--) {
    const [a, b] = pairs[q]!;
    const bits = (live.has(a) ? 1 : 0) | (live.has(b) ? 2 : 0);
    flags[q] = bits;
    if (bits !== 0) {
      live.add(a);
      live.add(b);
    }
  }
  return flags;
}

/** A comparator network that leaves given order statistics at known positions. */
export interface SelectionNetwork {
  readonly pairs: readonly [number, number][];
  /** at[q] holds the ranks[q]-th smallest value (0-based) once the network has run. */
  readonly at: readonly number[];
}

/** Min and max operations a network costs once dead outputs are skipped. */
export function selectionCost(network: SelectionNetwork): number {
  let ops = 0;
  for (const bits of liveOutputs(network.pairs, network.at)) ops += (bits & 1) + (bits >> 1);
  return ops;
}

/**
 * A network that puts the wanted order statistics (ranks ascending, at most
 * two) at known positions: the pruned Batcher sort, or a grid selection when
 * that costs fewer min/max operations. For the ends of a trimmed mean the grid
 * is ~17% cheaper (n = 100, ranks 10 and 89: 1,426 operations against 1,702);
 * for a median it is not, and Batcher's is kept.
 */
export function selectionNetwork(n: number, ranks: readonly number[]): SelectionNetwork {
  let best: SelectionNetwork = { pairs: pruneNetwork(batcherNetwork(n), ranks), at: ranks };
  let bestCost = selectionCost(best);
  for (let h = 2; h <= GRID_MAX_HEIGHT && 2 * h <= n; h++) {
    if (n % h !== 0) continue;
    const grid = gridSelection(n, n / h, h, ranks);
    const cost = selectionCost(grid);
    if (cost < bestCost) {
      best = grid;
      bestCost = cost;
    }
  }
  return best;
}

/** Column heights tried by selectionNetwork; the measured best are 2 and 4. */
const GRID_MAX_HEIGHT = 8;

/**
 * Selection on a g × h grid (column c holds positions c·h … c·h + h − 1):
 * sort every column, then every row. Afterwards the value at (r, c) is ≥ the
 * (r + 1)(c + 1) values up-left of it and ≤ the (h − r)(g − c) down-right of
 * it, both counts including itself. With distinct values (enough, by the 0-1
 * principle's argument for comparator networks) a value with more than n − k
 * values ≥ it has rank < k, and one with more than k + 1 values ≤ it has rank
 * > k. So the rank-k value lies among the rest, its candidates, at rank
 * k − (how many were ranked below): a small Batcher sort of the candidates
 * finds it, and pruning drops whatever the wanted ranks do not depend on.
 */
function gridSelection(n: number, g: number, h: number, ranks: readonly number[]): SelectionNetwork {
  const position = (r: number, c: number) => c * h + r;
  const pairs: [number, number][] = [];
  const sortAt = (positions: readonly number[]) => {
    for (const [i, j] of batcherNetwork(positions.length)) pairs.push([positions[i]!, positions[j]!]);
  };
  for (let c = 0; c < g; c++) sortAt(Array.from({ length: h }, (_, r) => position(r, c)));
  for (let r = 0; r < h; r++) sortAt(Array.from({ length: g }, (_, c) => position(r, c)));
  const below = (k: number, r: number, c: number) => (h - r) * (g - c) > n - k;
  const above = (k: number, r: number, c: number) => (r + 1) * (c + 1) > k + 1;
  const cells: [number, number][] = [];
  for (let c = 0; c < g; c++) for (let r = 0; r < h; r++) cells.push([r, c]);
  const candidates = ranks.map((k) => cells.filter(([r, c]) => !below(k, r, c) && !above(k, r, c)));
  const overlap = candidates.length > 1 && candidates[0]!.some(([r, c]) => !below(ranks[1]!, r, c) && !above(ranks[1]!, r, c));
  const at: number[] = [];
  if (!overlap) {
    // Disjoint candidate sets: each is sorted on its own, untouched by the other's sort.
    ranks.forEach((k, q) => {
      const mine = candidates[q]!.map(([r, c]) => position(r, c));
      sortAt(mine);
      at.push(mine[k - cells.filter(([r, c]) => below(k, r, c)).length]!);
    });
  } else {
    // One sort of the union; rank k sits after the non-candidates ranked below it.
    const union = cells.filter(([r, c]) => ranks.some((k) => !below(k, r, c) && !above(k, r, c)));
    const inUnion = new Set(union.map(([r, c]) => position(r, c)));
    const positions = [...inUnion];
    sortAt(positions);
    for (const k of ranks) at.push(positions[k - cells.filter(([r, c]) => !inUnion.has(position(r, c)) && below(k, r, c)).length]!);
  }
  return { pairs: pruneNetwork(pairs, at), at };
}

/** Writes the keys that would sit at `wanted` sorted positions of keys[base, base + n) into out[0, wanted.length). */
export type NetworkSelect = (keys: Int32Array, base: number, out: Int32Array) => void;

const networks = new Map<string, NetworkSelect>();

/**
 * A selection network for n values and the wanted sorted positions, compiled
 * once to straight-line code: the values live in local variables (registers),
 * and each compare-exchange is t = (a ^ b) & −(b < a); a ^= t; b ^= t.
 */
export function networkSelect(n: number, wanted: readonly number[]): NetworkSelect {
  if (!(Number.isInteger(n) && n >= 1 && n <= NETWORK_MAX)) throw new RangeError(`no sorting network for ${n} values`);
  const id = `${n}:${wanted.join(',')}`;
  let fn = networks.get(id);
  if (fn === undefined) {
    const lines: string[] = [];
    for (let i = 0; i < n; i++) lines.push(`let x${i} = keys[base + ${i}];`);
    const network = selectionNetwork(n, wanted);
    for (const [a, b] of network.pairs) {
      lines.push(`t = (x${a} ^ x${b}) & -(x${b} < x${a}); x${a} ^= t; x${b} ^= t;`);
    }
    network.at.forEach((p, q) => lines.push(`out[${q}] = x${p};`));
    // Generated from the comparator list above, nothing else: no input reaches the source text.
    fn = new Function('keys', 'base', 'out', `'use strict'; let t = 0;\n${lines.join('\n')}`) as NetworkSelect;
    networks.set(id, fn);
  }
  return fn;
}

// ---------------------------------------------------------------------------
// Quickselect with a branch-free partition.

// After a partition of [lo, hi) with pivot p: dst[lo, l) < p, dst(g, hi) > p,
// and the l..g run equals p (its slots hold stale values). l is returned, g
// left in partitionEnd.
let partitionEnd = 0;

function partition(src: Int32Array, so: number, dst: Int32Array, lo: number, hi: number, p: number): number {
  let l = lo;
  let g = hi - 1;
  for (let i = lo + so, e = hi + so; i < e; i++) {
    const v = src[i]!;
    dst[l] = v;
    dst[g] = v;
    l += +(v < p);
    g -= +(v > p);
  }
  partitionEnd = g;
  return l;
}

/** Sorts a[lo, hi) in place: the finish of every selection here, once a part is down to a few values. */
function insertionSort(a: Int32Array | Float64Array, lo: number, hi: number): void {
  for (let i = lo + 1; i < hi; i++) {
    const v = a[i]!;
    let j = i - 1;
    while (j >= lo && a[j]! > v) {
      a[j + 1] = a[j]!;
      j--;
    }
    a[j + 1] = v;
  }
}

/** The k-th smallest of cur[lo, hi); oth is the ping-pong buffer. Both are clobbered in [lo, hi). */
function selectOne(cur: Int32Array, oth: Int32Array, lo: number, hi: number, k: number): number {
  for (;;) {
    if (hi - lo <= 8) {
      insertionSort(cur, lo, hi);
      return cur[k]!;
    }
    // A pivot on k's side: the smallest (largest) of three when k is in the
    // first (last) quarter, so the part k ends up in is small.
    const x = cur[lo]!, y = cur[(lo + hi) >> 1]!, z = cur[hi - 1]!;
    const r = (k - lo) / (hi - lo);
    const p = r < 0.25 ? Math.min(x, y, z) : r > 0.75 ? Math.max(x, y, z) : median3(x, y, z);
    const l = partition(cur, 0, oth, lo, hi, p);
    const g = partitionEnd;
    if (k < l) hi = l;
    else if (k > g) lo = g + 1;
    else return p;
    const t = cur;
    cur = oth;
    oth = t;
  }
}

/** The results of selectPair. */
export const selected = { low: 0, high: 0 };

/**
 * The k1-th and k2-th smallest (k1 ≤ k2) of the n keys at keys[base, base + n),
 * into `selected`; a and b are scratch of length ≥ n. The keys are not modified.
 */
export function selectPair(keys: Int32Array, base: number, n: number, k1: number, k2: number, a: Int32Array, b: Int32Array): void {
  let p: number;
  if (n >= 40) {
    // Ninther: the median of three medians of three, for a first split near the middle.
    const s = (n / 9) | 0;
    p = median3(
      median3(keys[base]!, keys[base + s]!, keys[base + 2 * s]!),
      median3(keys[base + 3 * s]!, keys[base + 4 * s]!, keys[base + 5 * s]!),
      median3(keys[base + 6 * s]!, keys[base + 7 * s]!, keys[base + n - 1]!),
    );
  } else {
    p = median3(keys[base]!, keys[base + (n >> 1)]!, keys[base + n - 1]!);
  }
  let cur = a;
  let oth = b;
  let l = partition(keys, base, cur, 0, n, p);
  let g = partitionEnd;
  let lo = 0;
  let hi = n;
  for (;;) {
    if (k2 < l) hi = l;
    else if (k1 > g) lo = g + 1;
    else {
      // The two targets are on different sides of (or at) the pivot.
      selected.low = k1 < l ? selectOne(cur, oth, lo, l, k1) : p;
      selected.high = k2 > g ? selectOne(cur, oth, g + 1, hi, k2) : p;
      return;
    }
    if (hi - lo <= 8) {
      insertionSort(cur, lo, hi);
      selected.low = cur[k1]!;
      selected.high = cur[k2]!;
      return;
    }
    p = median3(cur[lo]!, cur[(lo + hi) >> 1]!, cur[hi - 1]!);
    l = partition(cur, 0, oth, lo, hi, p);
    g = partitionEnd;
    const t = cur;
    cur = oth;
    oth = t;
  }
}

/** The k-th smallest of a[0, n) (float64, clobbered); tmp is scratch of the same size. */
export function selectFloat(a: Float64Array, tmp: Float64Array, n: number, k: number): number {
  let cur = a;
  let oth = tmp;
  let lo = 0;
  let hi = n;
  for (;;) {
    if (hi - lo <= 8) {
      insertionSort(cur, lo, hi);
      return cur[k]!;
    }
    const p = median3(cur[lo]!, cur[(lo + hi) >> 1]!, cur[hi - 1]!);
    let l = lo;
    let g = hi - 1;
    for (let i = lo; i < hi; i++) {
      const v = cur[i]!;
      oth[l] = v;
      oth[g] = v;
      l += +(v < p);
      g -= +(v > p);
    }
    if (k < l) hi = l;
    else if (k > g) lo = g + 1;
    else return p;
    const t = cur;
    cur = oth;
    oth = t;
  }
}

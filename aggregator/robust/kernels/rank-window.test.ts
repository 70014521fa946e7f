// The WebAssembly SIMD rank-window kernel (median, trimmed mean) against the
// definition: sort each coordinate, average sorted positions [lo, hi), and
// share tied places equally. Covers the shapes the kernel special-cases:
// n = 1, 2, 3, odd and even, n not a multiple of the 4-row sum groups, d not
// a multiple of the 4 lanes, d spanning several blocks, ties, −0.
import test from 'ava';
import fc from 'fast-check';
import { rankWindow } from './coordinate.js';
import { coordinateMedian, trimmedMean, trimmedCount } from '../index.js';
import { windowLayout, windowModule } from './rank-window.js';
import { wasm } from './wasm-encoder.js';
import { tieHeavyUpdates } from '../../../test/support/tie-heavy.js';

interface Reference {
  readonly aggregate: Float32Array;
  readonly weight: number[];
  readonly unused: number[];
}

/** Sort every coordinate; a value's share is the window places its value holds, split among the updates holding it. */
function reference(us: readonly Float32Array[], lo: number, hi: number): Reference {
  const n = us.length;
  const d = us[0]!.length;
  const m = hi - lo;
  const aggregate = new Float32Array(d);
  const weight = new Array<number>(n).fill(0);
  const unused = new Array<number>(n).fill(0);
  for (let j = 0; j < d; j++) {
    const column = us.map((u) => u[j]! + 0); // + 0 turns −0 into +0
    const window = [...column].sort((a, b) => a - b).slice(lo, hi);
    aggregate[j] = window.reduce((a, b) => a + b, 0) / m;
    for (let i = 0; i < n; i++) {
      const places = window.filter((x) => x === column[i]).length;
      const holders = column.filter((x) => x === column[i]).length;
      weight[i] += places / holders / m / d;
      if (places === 0) unused[i] += 1 / d;
    }
  }
  return { aggregate, weight, unused };
}

const near = (a: number, b: number, rel = 1e-6) => Math.abs(a - b) <= rel * (1 + Math.abs(a) + Math.abs(b));

const updates = (n: number, d: number, seed: number, tieShare = 0.3): Float32Array[] => tieHeavyUpdates(n, d, seed, { tieShare });

/**
 * One or two values kept (of more than that): the same arithmetic as the
 * definition, so exactly its result, +0 for a zero. With nothing trimmed the
 * rule is the plain mean (kernels.ts), which keeps a −0 sum's sign.
 */
const exact = (m: number, n: number) => m <= 2 && m < n;

function check(t: import('ava').ExecutionContext, us: Float32Array[], lo: number, hi: number, label: string): void {
  const got = rankWindow(us, lo, hi);
  const want = reference(us, lo, hi);
  const m = hi - lo;
  for (let j = 0; j < want.aggregate.length; j++) {
    const a = got.aggregate[j]!;
    const b = want.aggregate[j]!;
    const ok = exact(m, us.length) ? Object.is(a, b) : near(a, b) && (b !== 0 || m === us.length || Object.is(a, 0));
    if (!ok) {
      t.fail(`${label}: coordinate ${j} is ${a}, the definition gives ${b}`);
      return;
    }
  }
  for (let i = 0; i < us.length; i++) {
    if (!near(got.weight[i]!, want.weight[i]!, 1e-9) || !near(got.unused[i]!, want.unused[i]!, 1e-9)) {
      t.fail(`${label}: update ${i} has weight ${got.weight[i]} / unused ${got.unused[i]}, the definition gives ${want.weight[i]} / ${want.unused[i]}`);
      return;
    }
  }
  t.pass();
}

test('the SIMD kernel matches the definition for n = 1 … 12, 16, 17, 33, 64, 100, 101 and every window', (t) => {
  for (const n of [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 16, 17, 33, 64, 100, 101]) {
    const windows: [number, number][] = [];
    if (n <= 12) {
      for (let lo = 0; lo < n; lo++) for (let hi = lo + 1; hi <= n; hi++) windows.push([lo, hi]);
    } else {
      const med = (n - 1) >> 1;
      const trim = trimmedCount(0.1, n);
      windows.push([med, n - med], [trim, n - trim], [0, 1], [n - 1, n], [1, n - 2]);
    }
    for (const [lo, hi] of windows) {
      for (const d of [1, 3, 4, 5, 13]) check(t, updates(n, d, 7 * n + d), lo, hi, `n=${n} d=${d} [${lo}, ${hi})`);
    }
  }
});

test('the SIMD kernel matches the definition across several blocks with a partial last block', (t) => {
  for (const n of [3, 10, 100]) {
    const { B } = windowLayout(n);
    const d = 2 * B + 7;
    const med = (n - 1) >> 1;
    check(t, updates(n, d, n, 0.1), med, n - med, `median n=${n} d=${d} (B=${B})`);
    const trim = Math.max(1, trimmedCount(0.1, n));
    if (n - 2 * trim >= 1) check(t, updates(n, d, n + 1, 0.1), trim, n - trim, `trimmed n=${n} d=${d}`);
  }
});

test('all-zero coordinates of either sign aggregate to +0 and share the window equally', (t) => {
  const us = [Float32Array.of(-0, 0, -0, 1), Float32Array.of(0, -0, -0, 2), Float32Array.of(-0, -0, -0, 3), Float32Array.of(0, 0, -0, 4), Float32Array.of(-0, 0, -0, 5)];
  for (const [lo, hi] of [[2, 3], [1, 4], [0, 4], [1, 5]] as const) {
    const got = rankWindow(us, lo, hi);
    for (let j = 0; j < 3; j++) t.true(Object.is(got.aggregate[j], 0), `[${lo}, ${hi}) coordinate ${j}: ${got.aggregate[j]}`);
  }
  const median = coordinateMedian(us);
  t.is(median.aggregate[3], 3);
  check(t, us, 2, 3, 'median of ±0');
});

test('the public median and trimmed mean run on the kernel: agreement on a larger round', (t) => {
  const us = updates(20, 1001, 99, 0.05);
  const med = coordinateMedian(us);
  const want = reference(us, 9, 11);
  t.deepEqual(Array.from(med.aggregate), Array.from(want.aggregate));
  const tm = trimmedMean(us, 0.2);
  const wantTm = reference(us, 4, 16);
  t.true(Array.from(tm.aggregate).every((x, j) => near(x, wantTm.aggregate[j]!)));
  t.true(tm.verdicts.every((v, i) => near(v.weight, wantTm.weight[i]!, 1e-9)));
});

test('generated modules validate for a range of n and windows', (t) => {
  for (const [n, lo, hi] of [[1, 0, 1], [2, 0, 1], [5, 1, 4], [48, 4, 44], [129, 64, 65]] as const) {
    t.true(wasm.validate(windowModule(windowLayout(n), lo, hi)), `n=${n} [${lo}, ${hi})`);
  }
});

test('property: the kernel agrees with sorting every coordinate, ties and −0 included', (t) => {
  const value = fc.oneof(fc.integer({ min: -2, max: 2 }), fc.constantFrom(0, -0), fc.float({ min: -100, max: 100, noNaN: true }));
  const round = fc
    .record({ n: fc.integer({ min: 1, max: 70 }), d: fc.integer({ min: 1, max: 23 }) })
    .chain(({ n, d }) =>
      fc.record({
        us: fc.array(fc.array(value, { minLength: d, maxLength: d }).map((a) => Float32Array.from(a)), { minLength: n, maxLength: n }),
        lo: fc.integer({ min: 0, max: n - 1 }),
        width: fc.integer({ min: 1, max: n }),
      }),
    );
  fc.assert(
    fc.property(round, ({ us, lo, width }) => {
      const n = us.length;
      const hi = Math.min(n, lo + width);
      const got = rankWindow(us, lo, hi);
      const want = reference(us, lo, hi);
      const m = hi - lo;
      return (
        Array.from(got.aggregate).every((a, j) => (exact(m, n) ? Object.is(a, want.aggregate[j]) : near(a, want.aggregate[j]!))) &&
        Array.from(got.weight).every((w, i) => near(w, want.weight[i]!, 1e-9)) &&
        Array.from(got.unused).every((u, i) => near(u, want.unused[i]!, 1e-9))
      );
    }),
    { numRuns: 200 },
  );
  t.pass();
});

// The weighted sum (WebAssembly SIMD up to 32 updates, JS sweeps above)
// against a plain float64 loop: n around the 4-row groups and the switch
// between the two, d not a multiple of the 4 lanes, several blocks.
import test from 'ava';
import fc from 'fast-check';
import { weightedSum } from './vectors.js';
import { simdWeightedSum, sumLayout, sumModule } from './weighted-sum.js';
import { rankWindow } from './coordinate.js';
import { windowKernel } from './rank-window.js';
import { wasm } from './wasm-encoder.js';

function plain(us: readonly Float32Array[], c: readonly number[]): Float64Array {
  const out = new Float64Array(us[0]!.length);
  us.forEach((u, i) => u.forEach((x, j) => (out[j] += c[i]! * x)));
  return out;
}

/** Both sum in float64, in different orders: equal up to float32 rounding (relative to the magnitudes summed). */
function agrees(got: Float32Array, us: readonly Float32Array[], c: readonly number[]): boolean {
  const want = plain(us, c);
  const scale = plain(
    us.map((u) => u.map(Math.abs)),
    c.map(Math.abs),
  );
  // Half a float32 ulp of the result, plus float64 reordering error of the terms' magnitudes, plus float32's smallest step.
  return Array.from(got).every((x, j) => Math.abs(x - want[j]!) <= 6e-8 * Math.abs(want[j]!) + 1e-14 * scale[j]! + 1e-44);
}

test('weighted sums match a plain loop for n = 1 … 9, 13, 100 and d across blocks and partial lanes', (t) => {
  for (const n of [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 32, 33, 100]) {
    const { B } = sumLayout(n);
    for (const d of [1, 2, 3, 5, 8, 2 * B + 3]) {
      const us = Array.from({ length: n }, (_, i) => Float32Array.from({ length: d }, (_, j) => Math.sin(i * 31 + j * 7) * (1 + i)));
      const c = us.map((_, i) => ((i % 3) - 1) * 0.25 + 1 / (i + 2));
      t.true(agrees(weightedSum(us, c), us, c), `n=${n} d=${d}`);
    }
  }
});

test('no updates or no coordinates give an empty sum; a zero coefficient drops its update', (t) => {
  t.is(weightedSum([], []).length, 0);
  t.is(weightedSum([new Float32Array(0)], [1]).length, 0);
  const r = weightedSum([Float32Array.of(1, 2, 3, 4, 5), Float32Array.of(1e30, -1e30, 7, 8, 9)], [0.5, 0]);
  t.deepEqual(Array.from(r), [0.5, 1, 1.5, 2, 2.5]);
});

test('generated modules validate', (t) => {
  for (const n of [1, 4, 5, 100]) t.true(wasm.validate(sumModule(sumLayout(n))), `n=${n}`);
});

test('property: weighted sums agree with a plain float64 loop', (t) => {
  const round = fc.record({ n: fc.integer({ min: 1, max: 45 }), d: fc.integer({ min: 1, max: 30 }) }).chain(({ n, d }) =>
    fc.record({
      us: fc.array(fc.array(fc.float({ min: -1e3, max: 1e3, noNaN: true }), { minLength: d, maxLength: d }).map((a) => Float32Array.from(a)), {
        minLength: n,
        maxLength: n,
      }),
      c: fc.array(fc.double({ min: -2, max: 2, noNaN: true }), { minLength: n, maxLength: n }),
    }),
  );
  fc.assert(fc.property(round, ({ us, c }) => agrees(weightedSum(us, c), us, c)), { numRuns: 200 });
  t.pass();
});

test('a kernel that needs more memory gets a new one: no buffer in use is ever detached', (t) => {
  const pair = [Float32Array.of(1, 5), Float32Array.of(3, 1)];
  t.deepEqual(Array.from(rankWindow(pair, 0, 1).aggregate), [1, 1]);
  const before = windowKernel(2, 0, 1).memory.buffer;
  // 5,000 rows of 64 coordinates: more than the first memory holds.
  const many = Array.from({ length: 5000 }, (_, i) => new Float32Array(8).fill(i % 3));
  const sum = simdWeightedSum(many, new Float64Array(5000).fill(1 / 5000), 8);
  t.true(Math.abs(sum[0]! - 4999 / 5000) < 1e-6);
  t.true(before.byteLength > 0, 'the first memory was grown (its buffer detached) instead of replaced');
  t.deepEqual(Array.from(rankWindow(pair, 0, 1).aggregate), [1, 1]);
});

// Robust aggregation rules on small cases computed by hand, their
// preconditions, the pre-filter, and the verdicts they give.
import test from 'ava';
import type { AggregationSpec } from '../experiment/schema.js';
import {
  aggregate,
  AggregationError,
  bulyan,
  centeredClipping,
  coordinateMedian,
  geometricMedian,
  krum,
  minUpdates,
  multiKrum,
  precondition,
  PRECONDITIONS,
  trimmedMean,
  weightedMean,
  type AggregationResult,
} from './index.js';
import { batcherNetwork, NETWORK_MAX, pruneNetwork, selectionCost, selectionNetwork } from './kernels/order-statistics.js';
import { EVIDENCE_OFF } from './evidence.js';

const f32 = (...xs: number[]) => Float32Array.from(xs);
const points = (...ps: number[][]) => ps.map((p) => Float32Array.from(p));
const ones = (n: number) => new Array<number>(n).fill(1);
const kinds = (r: AggregationResult) => r.verdicts.map((v) => v.verdict);
const weights = (r: AggregationResult) => r.verdicts.map((v) => v.weight);

function closeTo(t: { true(c: boolean, m?: string): void }, actual: ArrayLike<number>, expected: readonly number[], eps = 1e-6): void {
  t.true(
    actual.length === expected.length && expected.every((e, i) => Math.abs(actual[i]! - e) <= eps),
    `${JSON.stringify(Array.from(actual))} ≉ ${JSON.stringify(expected)}`,
  );
}

function sumOfWeights(r: AggregationResult): number {
  return r.verdicts.filter((v) => v.weight > 0).reduce((a, v) => a + v.weight, 0);
}

// --- median ---------------------------------------------------------------

test('median of [1, 5, 3] per coordinate, and who it came from', (t) => {
  // coordinate 0: 1, 5, 3 → 3 (update 2); 1: 10, 20, 0 → 10 (update 0); 2: −1, −5, 0 → −1 (update 0)
  const r = coordinateMedian(points([1, 10, -1], [5, 20, -5], [3, 0, 0]));
  t.deepEqual(Array.from(r.aggregate), [3, 10, -1]);
  closeTo(t, weights(r), [2 / 3, 0, 1 / 3]);
  t.deepEqual(kinds(r), ['kept', 'not-selected', 'kept']);
  t.is(r.verdicts[1]!.score, 1);
  t.regex(r.verdicts[1]!.reason, /unused in 100% of coordinates/);
  closeTo(t, [r.verdicts[0]!.score!, r.verdicts[2]!.score!], [1 / 3, 2 / 3]);
});

test('median of an even count is the mean of the two middle values, shared by both', (t) => {
  const r = coordinateMedian(points([1], [4], [2], [3]));
  t.deepEqual(Array.from(r.aggregate), [2.5]);
  closeTo(t, weights(r), [0, 0, 0.5, 0.5]);
  t.deepEqual(kinds(r), ['not-selected', 'not-selected', 'kept', 'kept']);
});

test('median of one or two updates', (t) => {
  t.deepEqual(Array.from(coordinateMedian(points([7, -2])).aggregate), [7, -2]);
  t.deepEqual(Array.from(coordinateMedian(points([1, 2], [3, 6])).aggregate), [2, 4]);
});

test('median ties share the place: equal values split it equally', (t) => {
  // 0, 0, 0, 9, −9: the median 0 is held by three equal values.
  const r = coordinateMedian(points([0], [0], [0], [9], [-9]));
  t.deepEqual(Array.from(r.aggregate), [0]);
  closeTo(t, weights(r), [1 / 3, 1 / 3, 1 / 3, 0, 0]);
});

test('median on the quickselect path (more updates than a sorting network takes)', (t) => {
  const n = NETWORK_MAX + 5;
  // Update i holds i in coordinate 0 and −i in coordinate 1, in a shuffled order.
  const order = Array.from({ length: n }, (_, i) => (i * 7) % n);
  const r = coordinateMedian(order.map((i) => f32(i, -i)));
  const mid = (n - 1) / 2;
  t.deepEqual(Array.from(r.aggregate), [mid, -mid]);
  closeTo(t, [sumOfWeights(r)], [1]);
});

// --- trimmed mean ---------------------------------------------------------

test('trimmed mean with β = 0.2 on 5 updates drops one value from each end', (t) => {
  // coordinate 0: 1 2 3 4 100 → mean(2, 3, 4) = 3 (updates 1, 2, 3)
  // coordinate 1: 0 1 2 −10 3 → sorted −10 0 1 2 3 → mean(0, 1, 2) = 1 (updates 0, 1, 2)
  const r = trimmedMean(points([1, 0], [2, 1], [3, 2], [4, -10], [100, 3]), 0.2);
  t.deepEqual(Array.from(r.aggregate), [3, 1]);
  closeTo(t, weights(r), [1 / 6, 1 / 3, 1 / 3, 1 / 6, 0]);
  t.deepEqual(kinds(r), ['kept', 'kept', 'kept', 'kept', 'not-selected']);
  t.regex(r.verdicts[4]!.reason, /^trimmed in 100% of coordinates/);
  t.regex(r.verdicts[0]!.reason, /^trimmed in 50% of coordinates; share 17% of the aggregate \(a fair share is 20%\)/);
  t.is(r.verdicts[0]!.score, 0.5);
});

test('trimmed mean: values tied at the edge share the places left', (t) => {
  // 0 0 0 0 5, β = 0.2: positions 1..3 kept, all 0; four zeros share three places.
  const r = trimmedMean(points([0], [0], [0], [0], [5]), 0.2);
  t.deepEqual(Array.from(r.aggregate), [0]);
  closeTo(t, weights(r), [0.25, 0.25, 0.25, 0.25, 0]);
  // 1 2 2 2 9, β = 0.4 keeps position 2 only: one of three 2s' worth.
  const s = trimmedMean(points([2], [1], [2], [9], [2]), 0.4);
  t.deepEqual(Array.from(s.aggregate), [2]);
  closeTo(t, weights(s), [1 / 3, 0, 1 / 3, 0, 1 / 3]);
});

test('trimmed mean with β·n < 1 trims nothing and is the plain mean', (t) => {
  const r = trimmedMean(points([1, 2], [3, 4], [5, 12]), 0.1);
  t.deepEqual(Array.from(r.aggregate), [3, 6]);
  closeTo(t, weights(r), [1 / 3, 1 / 3, 1 / 3]);
  t.regex(r.verdicts[0]!.reason, /^trimmed in 0% of coordinates/);
});

test('trimmed mean counts ⌊βn⌋ without floating-point loss (β = 0.29, n = 100 trims 29)', (t) => {
  // Update i holds i: with 29 trimmed from each end, the mean of 29..70 is 49.5 and update 28 is trimmed.
  const r = trimmedMean(
    Array.from({ length: 100 }, (_, i) => f32(i)),
    0.29,
  );
  t.deepEqual(Array.from(r.aggregate), [49.5]);
  t.is(r.verdicts[28]!.verdict, 'not-selected');
  t.is(r.verdicts[29]!.verdict, 'kept');
});

// --- Krum and Multi-Krum ----------------------------------------------------

// Six 2-D points: a cluster of four and two far away. With f = 1 each score
// sums the 6 − 1 − 2 = 3 smallest squared distances:
//   p0 (0,0): 1 (p1), 2 (p3), 4 (p2)            → 7
//   p1 (1,0): 1 (p0), 1 (p3), 5 (p2)            → 7
//   p2 (0,2): 2 (p3), 4 (p0), 5 (p1)            → 11
//   p3 (1,1): 1 (p1), 2 (p0), 2 (p2)            → 5
//   p4 (10,10): 4 (p5), 162 (p3), 164 (p2)      → 330
//   p5 (12,10): 4 (p4), 202 (p3), 208 (p2)      → 414
const SIX = points([0, 0], [1, 0], [0, 2], [1, 1], [10, 10], [12, 10]);

test('Krum picks the point whose 3 nearest neighbours are closest', (t) => {
  const r = krum(SIX, 1);
  t.deepEqual(Array.from(r.aggregate), [1, 1]);
  t.deepEqual(
    r.verdicts.map((v) => v.score),
    [7, 7, 11, 5, 330, 414],
  );
  t.deepEqual(kinds(r), ['not-selected', 'not-selected', 'not-selected', 'kept', 'not-selected', 'not-selected']);
  t.deepEqual(weights(r), [0, 0, 0, 1, 0, 0]);
  t.is(r.verdicts[3]!.reason, 'krum score 5, among the 1 selected (rank 1 of 6)');
  t.is(r.verdicts[5]!.reason, 'krum score 414, not among the 1 selected (rank 6 of 6)');
});

test('Multi-Krum averages the m best-scored points', (t) => {
  const r = multiKrum(SIX, 1, 3);
  // p3, p0, p1 → ((1 + 0 + 1)/3, (1 + 0 + 0)/3)
  closeTo(t, r.aggregate, [2 / 3, 1 / 3]);
  t.deepEqual(kinds(r), ['kept', 'kept', 'not-selected', 'kept', 'not-selected', 'not-selected']);
  closeTo(t, weights(r), [1 / 3, 1 / 3, 0, 1 / 3, 0, 0]);
  t.regex(r.verdicts[2]!.reason, /^krum score 11, not among the 3 selected/);
});

test('Krum and Multi-Krum preconditions', (t) => {
  t.throws(() => krum(points(...Array.from({ length: 8 }, () => [0])), 4), {
    instanceOf: AggregationError,
    message: 'krum with f=4 needs more than 10 updates (n > 2f + 2); this round has 8',
  });
  t.notThrows(() => krum(SIX, 1));
  t.throws(() => krum(SIX, 2), { message: /krum with f=2 needs more than 6 updates \(n > 2f \+ 2\); this round has 6/ });
  t.throws(() => multiKrum(SIX, 1, 6), { message: /m ≤ n − f.*m=6/ });
  t.throws(() => multiKrum(SIX, 1, 0), { message: /m to be a whole number ≥ 1/ });
  t.notThrows(() => multiKrum(SIX, 1, 5));
});

// --- Bulyan -----------------------------------------------------------------

test('Bulyan on 7 points with f = 1: iterated Krum picks 5, then the 3 closest to the median', (t) => {
  // Values 0 1 2 3 4 100 −50 (updates 0..6). θ = 7 − 2 = 5, β = 5 − 2 = 3.
  // Krum steps (f = 1, neighbours = |R| − 3): 2 (score 10); then 1 and 3 tie at
  // 14 → 1; then 3 (10); then 0 and 4 tie at 16 → 0; then 4 (no neighbours).
  // Selected 0 1 2 3 4: median 2, the 3 closest are 1 2 3 → 2.
  const r = bulyan(points([0], [1], [2], [3], [4], [100], [-50]), 1);
  t.deepEqual(Array.from(r.aggregate), [2]);
  t.deepEqual(kinds(r), ['not-selected', 'kept', 'kept', 'kept', 'not-selected', 'not-selected', 'not-selected']);
  closeTo(t, weights(r), [0, 1 / 3, 1 / 3, 1 / 3, 0, 0, 0]);
  t.regex(r.verdicts[5]!.reason, /^krum score 38030, /);
  t.regex(r.verdicts[5]!.reason, /not among the θ=5 selected by Bulyan's iterated Krum/);
  t.regex(r.verdicts[0]!.reason, /^selected by iterated Krum \(step 4 of 5\); not among the β=3 values closest to the median in 100% of coordinates/);
  t.is(r.verdicts[6]!.score, 10614);
});

test('Bulyan needs n ≥ 4f + 3', (t) => {
  t.throws(() => bulyan(points([0], [1], [2], [3], [4], [5]), 1), {
    instanceOf: AggregationError,
    message: 'bulyan with f=1 needs at least 7 updates (n ≥ 4f + 3); this round has 6',
  });
});

// --- geometric median ---------------------------------------------------------

const GM = { maxIterations: 100, smoothing: 1e-6, tolerance: 1e-5 };

test('geometric median of symmetric points is their centre, every point at distance 1', (t) => {
  const r = geometricMedian(points([1, 0], [-1, 0], [0, 1], [0, -1]), ones(4), GM);
  closeTo(t, r.aggregate, [0, 0]);
  closeTo(t, weights(r), [0.25, 0.25, 0.25, 0.25]);
  closeTo(
    t,
    r.verdicts.map((v) => v.score!),
    [1, 1, 1, 1],
  );
  t.true(r.verdicts.every((v) => v.verdict === 'kept'));
  t.regex(r.verdicts[0]!.reason, /converged after 1 Weiszfeld iteration$/);
});

test('geometric median ignores a far point that the mean follows, and down-weights it', (t) => {
  // 1-D: 0, 0, 0, 100. The mean is 25; the geometric median is 0.
  const r = geometricMedian(points([0], [0], [0], [100]), ones(4), GM);
  t.true(Math.abs(r.aggregate[0]!) < 0.01, `${r.aggregate[0]}`);
  t.is(r.verdicts[3]!.verdict, 'down-weighted');
  t.true(r.verdicts[3]!.weight < 0.01);
  closeTo(t, [sumOfWeights(r)], [1]);
  t.regex(r.verdicts[3]!.reason, /^Weiszfeld weight .* \(examples share 25%\); distance 100 from the geometric median; converged after \d+ Weiszfeld iterations$/);
});

test('geometric median weights by examples: a heavy point pulls it over', (t) => {
  // Two points; the one with 3× the examples is the weighted geometric median.
  const r = geometricMedian(points([0, 0], [10, 0]), [3, 1], GM);
  closeTo(t, r.aggregate, [0, 0], 1e-3);
  const capped = geometricMedian(points([0, 0], [10, 0]), [3, 1], { ...GM, maxIterations: 2 });
  t.regex(capped.verdicts[0]!.reason, /stopped at max_iterations=2$/);
});

test('geometric median on many points switches to the Gram form and agrees with the direct form', (t) => {
  const ps = Array.from({ length: 12 }, (_, i) => f32(Math.cos(i), Math.sin(2 * i) * 3, i % 3));
  const ex = ps.map((_, i) => 1 + (i % 4));
  const few = geometricMedian(ps, ex, { ...GM, tolerance: 0, maxIterations: 2 });
  const many = geometricMedian(ps, ex, { ...GM, tolerance: 0, maxIterations: 40 });
  const direct = geometricMedian(ps, ex, { ...GM, tolerance: 0, maxIterations: 3 });
  t.true(few.verdicts[0]!.reason.endsWith('stopped at max_iterations=2'));
  // More iterations never increase the objective Σ αᵢ‖z − uᵢ‖.
  const objective = (r: AggregationResult) => r.verdicts.reduce((a, v, i) => a + ex[i]! * v.score!, 0);
  t.true(objective(many) <= objective(direct) + 1e-9);
  t.true(objective(direct) <= objective(few) + 1e-9);
});

// --- centered clipping ------------------------------------------------------------

test('centered clipping moves the centre by the mean of the clipped differences', (t) => {
  // 1-D: 0 0 0 10 from centre 0 with τ = 1: 10 is clipped to 1 → v = 1/4.
  const one = centeredClipping(points([0], [0], [0], [10]), { tau: 1, iterations: 1 });
  t.deepEqual(Array.from(one.aggregate), [0.25]);
  t.deepEqual(kinds(one), ['kept', 'kept', 'kept', 'down-weighted']);
  t.is(one.verdicts[3]!.reason, 'clipped in 1 of 1 iteration; in the last, distance 10 from the centre, scaled by 0.1 to τ=1');
  t.is(one.verdicts[0]!.reason, 'within τ=1 of the centre in all 1 iteration (last distance 0)');
  // A second step from 0.25: the three zeros are 0.25 away (not clipped), 10 is
  // 9.75 away and clipped to 1 → v = 0.25 + (3·(−0.25) + 1)/4 = 0.3125.
  const two = centeredClipping(points([0], [0], [0], [10]), { tau: 1, iterations: 2 });
  t.deepEqual(Array.from(two.aggregate), [0.3125]);
  closeTo(t, [sumOfWeights(two)], [1]);
});

test('centered clipping starts from the given centre', (t) => {
  // From centre 10 with τ = 100 nothing is clipped: one step reaches the mean.
  const r = centeredClipping(points([0, 2], [4, 6]), { tau: 100, iterations: 1, center: f32(10, 10) });
  t.deepEqual(Array.from(r.aggregate), [2, 4]);
  t.throws(() => centeredClipping(points([0, 2]), { tau: 1, iterations: 1, center: f32(1) }), { message: /centre has 1 values/ });
  t.throws(() => centeredClipping(points([0, 2]), { tau: 0, iterations: 1 }), { message: /τ > 0/ });
});

// --- weighted mean -------------------------------------------------------------------

test('weighted mean over many updates (the blocked, unrolled kernel) matches a plain loop', (t) => {
  const n = 13;
  const d = 20_000;
  const us = Array.from({ length: n }, (_, i) => Float32Array.from({ length: d }, (_, j) => Math.sin(i * 31 + j)));
  const w = us.map((_, i) => i + 1);
  const total = w.reduce((a, b) => a + b, 0);
  const expected = new Float64Array(d);
  us.forEach((u, i) => u.forEach((x, j) => (expected[j] += (w[i]! / total) * x)));
  const r = weightedMean(us, w);
  // Both sum in float64, in different orders: equal up to float32 rounding.
  t.true(r.aggregate.every((x, j) => Math.abs(x - expected[j]!) <= 1e-7 * (1 + Math.abs(expected[j]!))));
});

// --- aggregate(): pre-filter and dispatch ---------------------------------------------

test('the pre-filter rejects wrong lengths, non-finite values and big norms, and clips', (t) => {
  const r = aggregate(
    { rule: 'mean', ...EVIDENCE_OFF, max_norm_ratio: null, max_examples_ratio: null, max_norm: 20, clip_norm: 5 },
    points([3, 4], [NaN, 0], [1, 2, 3], [30, 40], [6, 8], [0, Infinity]),
    [1, 1, 1, 1, 1, 1],
  );
  // Survivors: [3, 4] and [6, 8] clipped to [3, 4].
  t.deepEqual(Array.from(r.aggregate), [3, 4]);
  t.deepEqual(kinds(r), ['kept', 'rejected', 'rejected', 'rejected', 'down-weighted', 'rejected']);
  t.deepEqual(weights(r), [0.5, 0, 0, 0, 0.5, 0]);
  const reasons = r.verdicts.map((v) => v.reason);
  t.is(reasons[1], 'contains 1 non-finite value (NaN at index 0)');
  t.is(reasons[2], 'has 3 values; 5 of this round\'s 6 updates have 2');
  t.is(reasons[3], 'L2 norm 50 exceeds max_norm 20');
  t.is(reasons[4], 'clipped from 10 to 5; weighted by examples');
  t.is(reasons[5], 'contains 1 non-finite value (Infinity at index 1)');
});

test('the pre-filter checks lengths against the model size when given, and example counts for weighted rules', (t) => {
  const us = points([1, 1], [2, 2], [3, 3]);
  const r = aggregate({ rule: 'mean', ...EVIDENCE_OFF, max_norm_ratio: null, max_examples_ratio: null }, us, [1, 0, 1], { length: 2 });
  t.deepEqual(kinds(r), ['kept', 'rejected', 'kept']);
  t.regex(r.verdicts[1]!.reason, /^reported 0 examples/);
  // The median does not use example counts, so it does not reject on them.
  t.deepEqual(kinds(aggregate({ rule: 'median', ...EVIDENCE_OFF }, us, [1, 0, 1])), ['not-selected', 'kept', 'not-selected']);
  t.throws(() => aggregate({ rule: 'median', ...EVIDENCE_OFF }, us, [1, 1, 1], { length: 3 }), {
    message: /^no update passed the pre-filter \(the pre-filter rejected 3 of 3: update 0 has 2 values; the model has 3; /,
  });
});

test('clipped updates keep the rule\'s verdict, down-weighted, with both reasons', (t) => {
  const r = aggregate({ rule: 'krum', ...EVIDENCE_OFF, f: 1, clip_norm: 100 }, SIX.map((p, i) => (i === 5 ? f32(1200, 1000) : p)), ones(6));
  t.deepEqual(Array.from(r.aggregate), [1, 1]);
  t.is(r.verdicts[5]!.verdict, 'not-selected');
  t.regex(r.verdicts[5]!.reason, /^clipped from 1562 to 100; krum score .*, not among the 1 selected/);
});

test('aggregate explains when too few updates survive the pre-filter', (t) => {
  const us = points([0], [1], [2], [3], [4], [5], [NaN]);
  t.throws(() => aggregate({ rule: 'bulyan', ...EVIDENCE_OFF, f: 1 }, us, ones(7)), {
    instanceOf: AggregationError,
    message: /^bulyan with f=1 needs at least 7 updates \(n ≥ 4f \+ 3\); this round has 6 \(the pre-filter rejected 1 of 7: update 6 contains 1 non-finite value/,
  });
  t.throws(() => aggregate({ rule: 'median', ...EVIDENCE_OFF }, points([NaN]), [1]), { message: /^no update passed the pre-filter/ });
  t.throws(() => aggregate({ rule: 'median', ...EVIDENCE_OFF }, points([1]), [1, 2]), { message: '1 updates but 2 example counts' });
});

test('aggregate dispatches every rule and returns one verdict per input, weights summing to 1', (t) => {
  const us = Array.from({ length: 11 }, (_, i) => f32(Math.sin(i), Math.cos(3 * i), i % 2));
  const ex = us.map((_, i) => 10 + i);
  const specs: AggregationSpec[] = [
    { rule: 'mean', ...EVIDENCE_OFF, max_norm_ratio: null, max_examples_ratio: null },
    { rule: 'median', ...EVIDENCE_OFF },
    { rule: 'trimmed-mean', ...EVIDENCE_OFF, beta: 0.2 },
    { rule: 'krum', ...EVIDENCE_OFF, f: 2 },
    { rule: 'multi-krum', ...EVIDENCE_OFF, f: 2, m: 4 },
    { rule: 'bulyan', ...EVIDENCE_OFF, f: 2 },
    { rule: 'geometric-median', ...EVIDENCE_OFF, max_iterations: 50, smoothing: 1e-6, tolerance: 1e-6, max_examples_ratio: null },
    { rule: 'centered-clipping', ...EVIDENCE_OFF, tau: 0.5, iterations: 3 },
    { rule: 'dnc', ...EVIDENCE_OFF, f: 2, c: 1, niters: 5, b: 2, seed: 0 },
  ];
  for (const spec of specs) {
    const r = aggregate(spec, us, ex);
    t.is(r.verdicts.length, us.length, spec.rule);
    t.is(r.aggregate.length, 3, spec.rule);
    t.true(Math.abs(sumOfWeights(r) - 1) < 1e-9, `${spec.rule}: ${sumOfWeights(r)}`);
    t.true(r.verdicts.every((v) => v.reason.length > 0 && (v.verdict === 'rejected' || v.verdict === 'not-selected') === (v.weight === 0)), spec.rule);
    t.is(precondition(spec, us.length), undefined);
    t.true(minUpdates(spec) <= us.length);
  }
});

test('precondition and minUpdates tell in advance what a rule needs', (t) => {
  t.is(precondition({ rule: 'krum', ...EVIDENCE_OFF, f: 4 }, 8), 'krum with f=4 needs more than 10 updates (n > 2f + 2); this round has 8');
  t.is(precondition({ rule: 'krum', ...EVIDENCE_OFF, f: 4 }, 11), undefined);
  t.is(minUpdates({ rule: 'krum', ...EVIDENCE_OFF, f: 4 }), 11);
  t.is(minUpdates({ rule: 'multi-krum', ...EVIDENCE_OFF, f: 1, m: 5 }), 6);
  t.regex(precondition({ rule: 'multi-krum', ...EVIDENCE_OFF, f: 1, m: 5 }, 5)!, /m ≤ n − f/);
  t.is(minUpdates({ rule: 'bulyan', ...EVIDENCE_OFF, f: 2 }), 11);
  t.is(precondition({ rule: 'bulyan', ...EVIDENCE_OFF, f: 2 }, 10), 'bulyan with f=2 needs at least 11 updates (n ≥ 4f + 3); this round has 10');
  t.is(minUpdates({ rule: 'trimmed-mean', ...EVIDENCE_OFF, beta: 0.45 }), 1);
  t.is(precondition({ rule: 'median', ...EVIDENCE_OFF }, 0), 'median needs at least 1 update; this round has 0');
  t.is(PRECONDITIONS.bulyan, 'n ≥ 4f + 3');
});

test('sorting networks sort every 0/1 input (so, by the 0-1 principle, every input)', (t) => {
  for (let n = 1; n <= NETWORK_MAX; n++) {
    const pairs = batcherNetwork(n);
    // Every 0/1 input up to 16 values; beyond, random 0/1 inputs of every density.
    const inputs = n <= 16 ? 1 << n : 2000;
    let s = 12345;
    const random = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
    for (let q = 0; q < inputs; q++) {
      const density = q / inputs;
      const a = Array.from({ length: n }, (_, i) => (n <= 16 ? (q >>> i) & 1 : random() < density ? 1 : 0));
      for (const [x, y] of pairs) {
        if (a[x]! > a[y]!) [a[x], a[y]] = [a[y]!, a[x]!];
      }
      for (let i = 1; i < n; i++) {
        if (a[i - 1]! > a[i]!) {
          t.fail(`network for ${n} leaves ${a.join('')} unsorted`);
          return;
        }
      }
    }
  }
  t.pass();
});

test('selection networks leave each wanted order statistic where they say, on random and 0/1 inputs', (t) => {
  let s = 777;
  const random = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const cases: [number, number[]][] = [];
  for (const n of [8, 12, 20, 36, 48, 60, 64, 100, 120]) {
    for (const beta of [0, 0.05, 0.1, 0.2, 0.3, 0.45]) {
      const k = Math.floor(beta * n);
      cases.push([n, k === n - 1 - k ? [k] : [k, n - 1 - k]]);
    }
    cases.push([n, [(n - 1) >> 1, n >> 1].filter((k, i, a) => a.indexOf(k) === i)], [n, [1]], [n, [n - 2]]);
  }
  let grids = 0;
  for (const [n, ranks] of cases) {
    const network = selectionNetwork(n, ranks);
    const batcherCost = selectionCost({ pairs: pruneNetwork(batcherNetwork(n), ranks), at: ranks });
    t.true(selectionCost(network) <= batcherCost);
    if (selectionCost(network) < batcherCost) grids++;
    for (let q = 0; q < 400; q++) {
      // Half the inputs 0/1 of every density (ties everywhere), half distinct-ish floats.
      const a = Array.from({ length: n }, () => (q % 2 ? (random() < q / 400 ? 1 : 0) : random()));
      const sorted = [...a].sort((x, y) => x - y);
      for (const [x, y] of network.pairs) if (a[x]! > a[y]!) [a[x], a[y]] = [a[y]!, a[x]!];
      for (let r = 0; r < ranks.length; r++) {
        if (a[network.at[r]!] !== sorted[ranks[r]!]) {
          t.fail(`n=${n} ranks ${ranks.join(',')}: position ${network.at[r]} holds ${a[network.at[r]!]}, rank ${ranks[r]} is ${sorted[ranks[r]!]}`);
          return;
        }
      }
    }
  }
  // The case the grid is for: a 10% trimmed mean of 100 updates.
  const trimmed = selectionNetwork(100, [10, 89]);
  t.is(selectionCost(trimmed), 1426);
  t.is(selectionCost({ pairs: pruneNetwork(batcherNetwork(100), [10, 89]), at: [10, 89] }), 1702);
  t.true(grids > 10, `grid selections chosen in only ${grids} cases`);
});

// Properties of the robust aggregation rules on random inputs (fast-check):
// agreement with brute-force definitions, invariances, and what Byzantine
// updates cannot do.
import test from 'ava';
import fc from 'fast-check';
import type { AggregationSpec } from '../experiment/schema.js';
import {
  aggregate,
  bulyan,
  centeredClipping,
  coordinateMedian,
  geometricMedian,
  krum,
  multiKrum,
  trimmedCount,
  trimmedMean,
  type AggregationResult,
} from './index.js';
import { dnc } from './dnc.js';
import { gramMatrix, pairwiseSquaredDistances } from './kernels/vectors.js';
import { NETWORK_MAX } from './kernels/order-statistics.js';
import { EVIDENCE_OFF } from './evidence.js';

const RUNS = { numRuns: 150 };

/** Values with many ties (small integers, ±0) and without (any float32 in ±100). */
const value = fc.oneof(
  fc.integer({ min: -3, max: 3 }),
  fc.constantFrom(0, -0),
  fc.float({ min: -100, max: 100, noNaN: true }),
);

/** n updates of one length d (1 ≤ d ≤ maxD); n ranges over both sorting-network and quickselect sizes. */
function updatesOf(minN: number, maxN: number, maxD = 6, values = value): fc.Arbitrary<Float32Array[]> {
  return fc
    .integer({ min: 1, max: maxD })
    .chain((d) =>
      fc.array(
        fc.array(values, { minLength: d, maxLength: d }).map((a) => Float32Array.from(a)),
        { minLength: minN, maxLength: maxN },
      ),
    );
}

/** A deterministic permutation of 0..n−1 from a seed. */
function permutation(n: number, seed: number): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  let s = seed >>> 0 || 1;
  for (let i = n - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [p[i], p[j]] = [p[j]!, p[i]!];
  }
  return p;
}

/**
 * Brute force: sort each coordinate, average sorted positions [lo, hi); each
 * value's share of a coordinate is the number of window places its value
 * holds, split among the inputs with that value.
 */
function windowByDefinition(us: readonly Float32Array[], lo: number, hi: number): { aggregate: number[]; weights: number[] } {
  const n = us.length;
  const d = us[0]!.length;
  const m = hi - lo;
  const aggregate: number[] = [];
  const weights = new Array<number>(n).fill(0);
  for (let j = 0; j < d; j++) {
    const column = us.map((u) => u[j]! + 0); // + 0 turns −0 into 0
    const sorted = [...column].sort((a, b) => a - b);
    const window = sorted.slice(lo, hi);
    aggregate.push(window.reduce((a, b) => a + b, 0) / m);
    for (let i = 0; i < n; i++) {
      const places = window.filter((x) => x === column[i]).length;
      const holders = column.filter((x) => x === column[i]).length;
      weights[i] += places / holders / m / d;
    }
  }
  return { aggregate, weights };
}

const near = (a: number, b: number, rel = 1e-6) => Math.abs(a - b) <= rel * (1 + Math.abs(a) + Math.abs(b));

function sameArray(a: ArrayLike<number>, b: ArrayLike<number>, rel = 1e-6): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!near(a[i]!, b[i]!, rel)) return false;
  return true;
}

test('median and trimmed mean agree with sorting every coordinate, shares and ties included', (t) => {
  fc.assert(
    fc.property(updatesOf(1, NETWORK_MAX + 25), fc.double({ min: 0, max: 0.49, noNaN: true }), (us, beta) => {
      const n = us.length;
      const lo = (n - 1) >> 1;
      for (const [got, want] of [
        [coordinateMedian(us), windowByDefinition(us, lo, n - lo)],
        [trimmedMean(us, beta), windowByDefinition(us, trimmedCount(beta, n), n - trimmedCount(beta, n))],
      ] as const) {
        if (!sameArray(got.aggregate, want.aggregate.map(Math.fround))) return false;
        if (!sameArray(got.verdicts.map((v) => v.weight), want.weights, 1e-9)) return false;
      }
      return true;
    }),
    RUNS,
  );
  t.pass();
});

test('the coordinate-wise median lies between each coordinate\'s min and max', (t) => {
  fc.assert(
    fc.property(updatesOf(1, 40), (us) => {
      const { aggregate: med } = coordinateMedian(us);
      return Array.from(med).every((x, j) => {
        const column = us.map((u) => u[j]!);
        return x >= Math.min(...column) && x <= Math.max(...column);
      });
    }),
    RUNS,
  );
  t.pass();
});

test('every rule returns n identical updates unchanged', (t) => {
  const update = fc.array(fc.float({ min: -50, max: 50, noNaN: true }), { minLength: 1, maxLength: 8 }).map((a) => Float32Array.from(a));
  fc.assert(
    fc.property(update, fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 6 }), (u, f, extra) => {
      const n = 4 * f + 3 + extra;
      const us = Array.from({ length: n }, () => Float32Array.from(u));
      const ex = us.map((_, i) => 1 + i);
      const norm = Math.hypot(...u);
      const results: AggregationResult[] = [
        coordinateMedian(us),
        trimmedMean(us, 0.3),
        krum(us, f),
        multiKrum(us, f, n - f),
        bulyan(us, f),
        geometricMedian(us, ex, { maxIterations: 20, smoothing: 1e-6, tolerance: 1e-7 }),
        // From 0 with τ beyond the norm nothing is clipped; from the update itself every distance is 0.
        centeredClipping(us, { tau: norm + 1, iterations: 2 }),
        centeredClipping(us, { tau: 1e-3, iterations: 3, center: u }),
        // Every outlier score is 0: the ⌊c·f⌋ flagged are copies of the rest.
        dnc(us, { f, c: 1, niters: 3, b: 4, seed: 0 }),
      ];
      return results.every((r) => sameArray(r.aggregate, u, 1e-6));
    }),
    { numRuns: 60 },
  );
  t.pass();
});

test('f outliers scaled ×1000 are never Krum\'s choice and do not change which honest update it picks', (t) => {
  // Honest values in [1, 2], so that scaled copies land far from all of them.
  const honestValue = fc.float({ min: 1, max: 2, noNaN: true });
  const scenario = fc
    .tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 5 }), fc.integer({ min: 1, max: 4 }))
    .chain(([f, extra, d]) =>
      fc.record({
        f: fc.constant(f),
        honest: fc.array(
          fc.array(honestValue, { minLength: d, maxLength: d }).map((a) => Float32Array.from(a)),
          { minLength: f + 3 + extra, maxLength: f + 3 + extra },
        ),
        scale: fc.double({ min: 1000, max: 5000, noNaN: true }),
        seed: fc.integer(),
      }),
    );
  fc.assert(
    fc.property(scenario, ({ f, honest, scale, seed }) => {
      const n = honest.length + f;
      const outliers = Array.from({ length: f }, (_, i) => honest[i % honest.length]!.map((x) => x * scale));
      const order = permutation(n, seed);
      const all = order.map((k) => (k < honest.length ? honest[k]! : outliers[k - honest.length]!));
      // By definition, over the honest updates only: their n − f − 2 nearest are all honest.
      const dist2 = (a: Float32Array, b: Float32Array) => a.reduce((s, x, j) => s + (x - b[j]!) ** 2, 0);
      const scores = all.map((u, i) =>
        order[i]! >= honest.length
          ? Infinity
          : all
              .filter((_, k) => k !== i)
              .map((v) => dist2(u, v))
              .sort((a, b) => a - b)
              .slice(0, n - f - 2)
              .reduce((a, b) => a + b, 0),
      );
      const best = Math.min(...scores);
      const chosen = krum(all, f).verdicts.findIndex((v) => v.verdict === 'kept');
      return order[chosen]! < honest.length && near(scores[chosen]!, best, 1e-9);
    }),
    RUNS,
  );
  t.pass();
});

test('unweighted rules do not depend on the order the updates arrived in', (t) => {
  const distinct = fc.float({ min: -10, max: 10, noNaN: true, noDefaultInfinity: true });
  fc.assert(
    fc.property(updatesOf(3, 30, 5, distinct), fc.integer(), fc.double({ min: 0, max: 0.45, noNaN: true }), (us, seed, beta) => {
      const n = us.length;
      const p = permutation(n, seed);
      const shuffled = p.map((i) => us[i]!);
      const pairs: [AggregationResult, AggregationResult][] = [
        [coordinateMedian(us), coordinateMedian(shuffled)],
        [trimmedMean(us, beta), trimmedMean(shuffled, beta)],
        [centeredClipping(us, { tau: 2, iterations: 3 }), centeredClipping(shuffled, { tau: 2, iterations: 3 })],
      ];
      const f = Math.floor((n - 3) / 2);
      const k = krum(us, f);
      const ks = k.verdicts.map((v) => v.score!);
      // Krum's choice is only order-free when the best score is unique.
      if (ks.filter((s) => s === Math.min(...ks)).length === 1) pairs.push([k, krum(shuffled, f)]);
      for (const [a, b] of pairs) {
        if (!sameArray(a.aggregate, b.aggregate, 1e-5)) return false;
        // Verdicts travel with their update.
        if (!p.every((i, k2) => near(a.verdicts[i]!.weight, b.verdicts[k2]!.weight, 1e-9))) return false;
      }
      return true;
    }),
    RUNS,
  );
  t.pass();
});

test('Bulyan\'s aggregate stays within the honest range when f updates are wild', (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 0, max: 4 }), fc.integer(), (f, extra, seed) => {
      const n = 4 * f + 3 + extra;
      const honest = Array.from({ length: n - f }, (_, i) => Float32Array.from({ length: 3 }, (_, j) => Math.sin(seed + 5 * i + j)));
      const wild = Array.from({ length: f }, (_, i) => Float32Array.from({ length: 3 }, (_, j) => (i + 1) * (j % 2 ? 1e4 : -1e4)));
      const all = [...honest, ...wild];
      const p = permutation(n, seed);
      const r = bulyan(
        p.map((i) => all[i]!),
        f,
      );
      return Array.from(r.aggregate).every((x, j) => {
        const column = honest.map((u) => u[j]!);
        return x >= Math.min(...column) - 1e-6 && x <= Math.max(...column) + 1e-6;
      });
    }),
    RUNS,
  );
  t.pass();
});

test('verdicts: one per input, weights in the model sum to 1, weight 0 means not selected or rejected, rejected means evidence, evidence never changes the aggregate', (t) => {
  const spec: fc.Arbitrary<AggregationSpec> = fc.oneof(
    fc.constant<AggregationSpec>({ rule: 'mean', ...EVIDENCE_OFF, max_norm_ratio: null, max_examples_ratio: null }),
    // The mean as experiments get it by default: relative norm check and claim cap on.
    fc.constant<AggregationSpec>({ rule: 'mean', ...EVIDENCE_OFF, max_norm_ratio: 10, max_examples_ratio: 2 }),
    fc.constant<AggregationSpec>({ rule: 'median', ...EVIDENCE_OFF }),
    fc.double({ min: 0, max: 0.45, noNaN: true }).map((beta): AggregationSpec => ({ rule: 'trimmed-mean', ...EVIDENCE_OFF, beta })),
    fc.constant<AggregationSpec>({ rule: 'krum', ...EVIDENCE_OFF, f: 1 }),
    fc.constant<AggregationSpec>({ rule: 'multi-krum', ...EVIDENCE_OFF, f: 1, m: 3 }),
    fc.constant<AggregationSpec>({ rule: 'bulyan', ...EVIDENCE_OFF, f: 1 }),
    fc.constant<AggregationSpec>({ rule: 'geometric-median', ...EVIDENCE_OFF, max_iterations: 30, smoothing: 1e-6, tolerance: 1e-6, max_examples_ratio: 2 }),
    fc.double({ min: 0.01, max: 10, noNaN: true }).map((tau): AggregationSpec => ({ rule: 'centered-clipping', ...EVIDENCE_OFF, tau, iterations: 3 })),
    // b below and above d (≤ 6), and c·f up to 5 flagged per iteration of the ≥ 6 updates that pass.
    fc
      .record({ f: fc.integer({ min: 0, max: 2 }), c: fc.constantFrom(1, 2.5), b: fc.integer({ min: 1, max: 8 }), seed: fc.integer() })
      .map(({ f, c, b, seed }): AggregationSpec => ({ rule: 'dnc', ...EVIDENCE_OFF, f, c, niters: 5, b, seed })),
  );
  fc.assert(
    fc.property(
      spec,
      updatesOf(7, 30, 6),
      fc.option(fc.double({ min: 1, max: 200, noNaN: true }), { nil: undefined }),
      fc.integer({ min: 0, max: 100 }),
      // The evidence checks: off, at their defaults, or at other thresholds; sometimes with a copied update.
      fc.constantFrom(EVIDENCE_OFF, { outlier_distance_ratio: 2, duplicate_distance_ratio: 0.1 }, { outlier_distance_ratio: 1.01, duplicate_distance_ratio: 0.9 }),
      fc.integer({ min: 0, max: 100 }),
      (s, us, clip, poison, evidence, copy) => {
        // Sometimes poison one update with a NaN, sometimes copy one.
        if (poison < us.length && us.length > 7) us[poison] = Float32Array.from(us[poison]!, (x, j) => (j === 0 ? NaN : x));
        if (copy + 1 < us.length) us[copy + 1] = Float32Array.from(us[copy]!);
        const examples = us.map((_, i) => 1 + (i % 5));
        const r = aggregate({ ...s, ...evidence, clip_norm: clip }, us, examples);
        const off = aggregate({ ...s, ...EVIDENCE_OFF, clip_norm: clip }, us, examples);
        const total = r.verdicts.reduce((a, v) => a + v.weight, 0);
        return (
          r.verdicts.length === us.length &&
          Math.abs(total - 1) < 1e-9 &&
          r.verdicts.every(
            (v) =>
              (v.verdict === 'rejected' || v.verdict === 'not-selected') === (v.weight === 0) &&
              (v.verdict !== 'rejected' || (v.evidence ?? '').length > 0) &&
              (v.verdict !== 'not-selected' || v.evidence === undefined) &&
              v.weight >= 0 &&
              v.reason.length > 0,
          ) &&
          us.every((u, i) => !u.some(Number.isNaN) || r.verdicts[i]!.verdict === 'rejected') &&
          r.aggregate.every(Number.isFinite) &&
          r.aggregate.every((x, j) => Object.is(x, off.aggregate[j]))
        );
      },
    ),
    RUNS,
  );
  t.pass();
});

test('the geometric median never does worse than the weighted mean on its own objective', (t) => {
  fc.assert(
    fc.property(updatesOf(1, 25, 4), fc.integer({ min: 1, max: 60 }), (us, iterations) => {
      const ex = us.map((_, i) => 1 + (i % 3));
      const total = ex.reduce((a, b) => a + b, 0);
      const objective = (z: ArrayLike<number>) =>
        us.reduce((a, u, i) => a + (ex[i]! / total) * Math.sqrt(u.reduce((s, x, j) => s + (x - z[j]!) ** 2, 0)), 0);
      const mean = us[0]!.map((_, j) => us.reduce((a, u, i) => a + (ex[i]! / total) * u[j]!, 0));
      const r = geometricMedian(us, ex, { maxIterations: iterations, smoothing: 1e-6, tolerance: 0 });
      return objective(r.aggregate) <= objective(mean) * (1 + 1e-6) + 1e-6;
    }),
    RUNS,
  );
  t.pass();
});

test('centered clipping with τ beyond every distance is one plain-mean step', (t) => {
  fc.assert(
    fc.property(updatesOf(1, 25, 5), (us) => {
      const n = us.length;
      const r = centeredClipping(us, { tau: 1e6, iterations: 1 });
      const mean = us[0]!.map((_, j) => us.reduce((a, u) => a + u[j]!, 0) / n);
      return sameArray(r.aggregate, mean, 1e-6) && r.verdicts.every((v) => v.verdict === 'kept' && near(v.weight, 1 / n, 1e-9));
    }),
    RUNS,
  );
  t.pass();
});

test('the blocked Gram matrix and the distances from it match plain dot products', (t) => {
  fc.assert(
    fc.property(updatesOf(1, 14, 9), (us) => {
      const n = us.length;
      const G = gramMatrix(us);
      const D = pairwiseSquaredDistances(us);
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < n; j++) {
          const dot = us[i]!.reduce((a, x, k) => a + x * us[j]![k]!, 0);
          const dist = us[i]!.reduce((a, x, k) => a + (x - us[j]![k]!) ** 2, 0);
          if (!near(G[i * n + j]!, dot, 1e-12)) return false;
          // The Gram form loses digits to cancellation: compare relative to the norms.
          if (Math.abs(D[i * n + j]! - dist) > 1e-9 * (1 + G[i * n + i]! + G[j * n + j]!)) return false;
        }
      }
      return true;
    }),
    RUNS,
  );
  t.pass();
});

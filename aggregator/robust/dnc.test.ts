// Divide-and-Conquer: a case small enough to work out by hand, crafted
// updates among honest ones, determinism and the seed, the precondition.
import test from 'ava';
import { Rng } from '../../core/rng.js';
import { summarizeVerdicts } from '../rounds/verdict-summary.js';
import { dnc, dncMinUpdates, dncPrecondition, dncRule, outlierScores, sampleCoordinates, type DncOptions } from './dnc.js';
import { aggregate, precondition } from './index.js';
import { aggregationSchema } from './rules.js';
import { AggregationError, type AggregationResult } from './verdict.js';
import { EVIDENCE_OFF } from './evidence.js';

const points = (...ps: number[][]) => ps.map((p) => Float32Array.from(p));
const kinds = (r: AggregationResult) => r.verdicts.map((v) => v.verdict);
const options = (o: Partial<DncOptions> & { f: number }): DncOptions => ({ c: 1, niters: 5, b: 10000, seed: 0, ...o });

function closeTo(t: { true(c: boolean, m?: string): void }, actual: ArrayLike<number>, expected: readonly number[], eps = 1e-6): void {
  t.true(
    actual.length === expected.length && expected.every((e, i) => Math.abs(actual[i]! - e) <= eps),
    `${JSON.stringify(Array.from(actual))} ≉ ${JSON.stringify(expected)}`,
  );
}

// Four points, built from p = (3, 4)/5 and q = (4, −3)/5 around μ = (1, 2):
//   uᵢ = μ + αᵢ·p + βᵢ·q,  α = (10, −5, −5, 0),  β = (0, 5, −5, 0).
// Σα = Σβ = Σαβ = 0, so μ is the mean and the centered rows' CᵀC = 150·ppᵀ + 50·qqᵀ:
// the top right singular vector is p (σ₁² = 150), and the outlier scores ⟨uᵢ − μ, p⟩² are
// αᵢ² = 100, 25, 25, 0; in units of their mean 37.5: 8/3, 2/3, 2/3, 0.
const HAND = points([7, 10], [2, -5], [-6, 1], [1, 2]);

test('by hand: the top singular vector is (3, 4)/5 and the scores are the squared projections on it', (t) => {
  const scores = outlierScores(HAND, sampleCoordinates(2, 10000, 0, 0));
  closeTo(t, scores, [100, 25, 25, 0], 1e-9);
  const r = dnc(HAND, options({ f: 1 }));
  t.deepEqual(kinds(r), ['not-selected', 'kept', 'kept', 'kept']);
  closeTo(t, r.verdicts.map((v) => v.weight), [0, 1 / 3, 1 / 3, 1 / 3], 1e-12);
  closeTo(t, r.verdicts.map((v) => v.score!), [8 / 3, 2 / 3, 2 / 3, 0], 1e-9);
  // The mean of (2, −5), (−6, 1), (1, 2).
  closeTo(t, r.aggregate, [-1, -2 / 3]);
  t.is(
    r.verdicts[0]!.reason,
    'dnc outlier score 2.667× the mean in iteration 1, where the highest not flagged was 0.6667×; ' +
      'flagged in iterations 1, 2, 3, 4, 5 of 5 (each flags the 1 highest of 4 outlier scores)',
  );
  t.is(
    r.verdicts[3]!.reason,
    'dnc outlier score at most 0× the mean; never flagged in 5 iterations (each flags the 1 highest of 4 outlier scores); one of 3 kept',
  );
});

/** 16 honest updates around a common mean, 4 identical copies of that mean shifted by ±2 in every coordinate, interleaved. */
function scenario(d: number): { updates: Float32Array[]; byzantine: boolean[] } {
  const rng = new Rng(7);
  const mean = Float32Array.from({ length: d }, () => rng.normal(3, 1));
  const honest = Array.from({ length: 16 }, () => Float32Array.from(mean, (x) => x + rng.normal(0, 1)));
  const crafted = Float32Array.from(mean, (x) => x + (rng.uniform() < 0.5 ? -2 : 2));
  const byzantine = Array.from({ length: 20 }, (_, i) => i % 5 === 2);
  let h = 0;
  return { updates: byzantine.map((b) => (b ? crafted : honest[h++]!)), byzantine };
}

test('16 honest updates and 4 crafted ones shifted along one direction: DnC leaves out the 4, keeps the 16 and averages them', (t) => {
  const { updates, byzantine } = scenario(20000);
  // The paper's defaults (c = 1, niters = 5, b = 10000) as the experiment schema fills them in.
  const spec = aggregationSchema.parse({ rule: 'dnc', f: 4 });
  t.like(spec, { c: 1, niters: 5, b: 10000, seed: 0 });
  // DnC alone leaves them out; through aggregate, the evidence checks see four copies of one vector and reject them.
  for (const [r, out] of [
    [aggregate(spec, updates, updates.map(() => 1)), 'rejected'],
    [dnc(updates, options({ f: 4, b: 500 })), 'not-selected'],
  ] as const) {
    t.deepEqual(
      kinds(r),
      byzantine.map((b) => (b ? out : 'kept')),
    );
    const kept = updates.filter((_, i) => !byzantine[i]);
    const mean = kept[0]!.map((_, j) => kept.reduce((a, u) => a + u[j]!, 0) / kept.length);
    let worst = 0;
    for (let j = 0; j < mean.length; j++) worst = Math.max(worst, Math.abs(r.aggregate[j]! - mean[j]!));
    t.true(worst < 1e-5, `largest difference from the kept updates' mean: ${worst}`);
    t.true(r.verdicts.every((v) => (v.verdict === 'kept' ? v.weight === 1 / 16 : v.weight === 0)));
    // Along the top direction the crafted ones sit at 0.8·δ from the mean and the honest at 0.2·δ: each crafted
    // update carries 0.64 / (4·0.64 + 16·0.04) = a fifth of the spread (4× an equal share), each honest one 1/80 (0.25×).
    const lowestCrafted = Math.min(...r.verdicts.filter((_, i) => byzantine[i]).map((v) => v.score!));
    const highestHonest = Math.max(...r.verdicts.filter((_, i) => !byzantine[i]).map((v) => v.score!));
    t.true(lowestCrafted > 3.5 && highestHonest < 0.5, `${lowestCrafted} vs ${highestHonest}`);
    t.regex(
      r.verdicts[2]!.reason,
      /^dnc outlier score [\d.]+× the mean in iteration \d, where the highest not flagged was 0\.\d+×; flagged in iterations 1, 2, 3, 4, 5 of 5 \(each flags the 4 highest of 20 outlier scores\)/,
    );
    t.regex(r.verdicts[0]!.reason, /^dnc outlier score at most 0\.\d+× the mean; never flagged in 5 iterations .*; one of 16 kept$/);
    // The round's summary line groups them under one kind, as it does Krum's.
    t.is(summarizeVerdicts(r.verdicts), out === 'rejected' ? '4 of 20 rejected (its distance to the aggregate)' : '4 not selected (dnc outlier score)');
  }
});

test('deterministic: two calls give the same bytes; the seed and the iteration choose the coordinates', (t) => {
  const { updates } = scenario(3000);
  const a = dnc(updates, options({ f: 4, b: 200, seed: 11 }));
  const b = dnc(updates, options({ f: 4, b: 200, seed: 11 }));
  t.deepEqual(Buffer.from(a.aggregate.buffer), Buffer.from(b.aggregate.buffer));
  t.deepEqual(a.verdicts, b.verdicts);
  // Another seed samples other coordinates, so the honest updates' scores change (the verdicts do not).
  const c = dnc(updates, options({ f: 4, b: 200, seed: 12 }));
  t.deepEqual(kinds(c), kinds(a));
  t.notDeepEqual(
    c.verdicts.map((v) => v.score),
    a.verdicts.map((v) => v.score),
  );

  const s = sampleCoordinates(3000, 200, 11, 0);
  t.deepEqual(s, sampleCoordinates(3000, 200, 11, 0));
  t.is(s.length, 200);
  t.is(new Set(s).size, 200);
  t.true(s.every((j, k) => j < 3000 && (k === 0 || j > s[k - 1]!)), 'ascending, distinct, in range');
  t.notDeepEqual(sampleCoordinates(3000, 200, 12, 0), s);
  t.notDeepEqual(sampleCoordinates(3000, 200, 11, 1), s);
  // Every coordinate can be drawn: over many iterations the samples cover them all.
  const seen = new Set<number>();
  for (let it = 0; it < 200; it++) for (const j of sampleCoordinates(50, 5, 3, it)) seen.add(j);
  t.is(seen.size, 50);
});

test('b larger than d: every iteration looks at all coordinates', (t) => {
  t.deepEqual(Array.from(sampleCoordinates(3, 10000, 5, 2)), [0, 1, 2]);
  const us = points([0, 0, 0], [1, 0, 1], [0, 1, 0], [1, 1, 1], [50, -40, 60]);
  const r = dnc(us, options({ f: 1, b: 10000, seed: 5 }));
  t.deepEqual(kinds(r), ['kept', 'kept', 'kept', 'kept', 'not-selected']);
  closeTo(t, r.aggregate, [0.5, 0.5, 0.5]);
  t.regex(r.verdicts[4]!.reason, /; flagged in iterations 1, 2, 3, 4, 5 of 5 /);
  // The seed only chooses coordinates, and there is nothing to choose.
  t.deepEqual(dnc(us, options({ f: 1, b: 3, seed: 6 })), r);
});

test('when every update is flagged in some iteration, the ones flagged least are kept', (t) => {
  // With b = 1 each iteration looks at one coordinate, and update j stands out in coordinate j:
  // five iterations flag one update each, and with a seed that samples all three coordinates, none goes unflagged.
  const us = points([10, 0, 0], [0, 10, 0], [0, 0, 10]);
  const seed = [...Array(50).keys()].find((s) => new Set([0, 1, 2, 3, 4].map((it) => sampleCoordinates(3, 1, s, it)[0])).size === 3)!;
  t.not(seed, undefined);
  const counts = [0, 0, 0];
  for (let it = 0; it < 5; it++) counts[sampleCoordinates(3, 1, seed, it)[0]!]!++;
  const fewest = Math.min(...counts);
  const r = dnc(us, options({ f: 1, b: 1, seed }));
  t.deepEqual(
    kinds(r),
    counts.map((c) => (c === fewest ? 'kept' : 'not-selected')),
  );
  const kept = counts.flatMap((c, i) => (c === fewest ? [i] : []));
  closeTo(
    t,
    r.aggregate,
    [0, 1, 2].map((j) => kept.reduce((a, i) => a + us[i]![j]!, 0) / kept.length),
  );
  t.regex(r.verdicts[kept[0]!]!.reason, /the fewest of any update .*every update was flagged at least once, so the least flagged are kept/);
});

test('f = 0 flags nothing: DnC is the plain mean', (t) => {
  const r = dnc(HAND, options({ f: 0 }));
  t.true(r.verdicts.every((v) => v.verdict === 'kept' && v.weight === 0.25));
  closeTo(t, r.aggregate, [1, 2]);
});

test('precondition: n > c·f, and the parameters it needs', (t) => {
  t.throws(() => dnc(HAND, options({ f: 4 })), {
    instanceOf: AggregationError,
    message: 'dnc with f=4 and c=1 flags the ⌊c·f⌋ = 4 highest outlier scores in each iteration, so it needs more than 4 updates (n > c·f); this round has 4',
  });
  // ⌊1.5 · 3⌋ = 4 of 4 updates.
  t.throws(() => dnc(HAND, options({ f: 3, c: 1.5 })), { message: /^dnc with f=3 and c=1.5 flags the ⌊c·f⌋ = 4 .* needs more than 4 updates \(n > c·f\); this round has 4$/ });
  t.notThrows(() => dnc(HAND, options({ f: 3 })));
  t.is(dncMinUpdates(1.5, 3), 5);
  t.is(dncMinUpdates(0.29, 100), 30);
  t.regex(precondition({ rule: 'dnc', ...EVIDENCE_OFF, f: 3, c: 1.5, niters: 5, b: 10000, seed: 0 }, 4)!, /^dnc with f=3 and c=1.5 .*this round has 4$/);
  t.is(precondition({ rule: 'dnc', ...EVIDENCE_OFF, f: 3, c: 1.5, niters: 5, b: 10000, seed: 0 }, 5), undefined);
  t.is(dncRule.precondition.text, 'n > c·f');
  t.is(dncPrecondition(options({ f: 1, c: 0 }), 10), 'dnc needs a filtering fraction c > 0; got c=0');
  t.is(dncPrecondition(options({ f: 1.5 }), 10), 'dnc needs f to be a whole number ≥ 0; got f=1.5');
  t.is(dncPrecondition(options({ f: 1, niters: 0 }), 10), 'dnc needs niters to be a whole number ≥ 1; got niters=0');
  t.is(dncPrecondition(options({ f: 1, b: 0 }), 10), 'dnc needs b to be a whole number ≥ 1; got b=0');
  t.is(dncPrecondition(options({ f: 1, seed: 0.5 }), 10), 'dnc needs an integer seed; got seed=0.5');
  t.throws(() => dnc([], options({ f: 0 })), { message: /this round has 0/ });
  t.throws(() => dnc(points([1, 2], [3]), options({ f: 0 })), { message: 'update 1 has 1 values, update 0 has 2' });
  // The schema refuses what the precondition would.
  t.false(aggregationSchema.safeParse({ rule: 'dnc' }).success, 'f is required');
  t.false(aggregationSchema.safeParse({ rule: 'dnc', f: 1, c: 0 }).success);
  t.false(aggregationSchema.safeParse({ rule: 'dnc', f: 1, b: 0 }).success);
  t.false(aggregationSchema.safeParse({ rule: 'dnc', f: 1, seed: 1.5 }).success);
});

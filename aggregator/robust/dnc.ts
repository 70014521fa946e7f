import { z } from 'zod';
import { Rng } from '../../core/rng.js';
import { num } from './format.js';
import { weightedSum } from './kernels/vectors.js';
import { byzantineCount, byzantineLeft } from './krum.js';
import { ruleSchema, type RobustRule } from './rule.js';
import { AggregationError, checkSameLength, type AggregationResult, type Verdict } from './verdict.js';

/** Power iteration on the centered Gram matrix stops when its unit vector moves by less than this (L2)... */
export const POWER_TOLERANCE = 1e-12;
/** ...or after this many steps. */
export const POWER_MAX_STEPS = 1000;

export interface DncOptions {
  /** f: how many Byzantine updates the rule must tolerate. */
  readonly f: number;
  /** Filtering fraction: each iteration flags the ⌊c·f⌋ highest outlier scores. */
  readonly c: number;
  /** Iterations, each on its own random sample of coordinates. */
  readonly niters: number;
  /** Coordinates sampled per iteration (all of them when the updates are shorter). */
  readonly b: number;
  /** Seed of the coordinate sampling. */
  readonly seed: number;
}

/** ⌊c·f⌋, without floating-point loss (c = 0.29, f = 100 flags 29, not 28). */
export function dncFlagged(c: number, f: number): number {
  return Math.floor(c * f + 1e-9);
}

/** DnC needs n > c·f updates: each iteration flags ⌊c·f⌋ of them and must leave one. */
export function dncMinUpdates(c: number, f: number): number {
  return dncFlagged(c, f) + 1;
}

export function dncPrecondition(options: DncOptions, n: number): string | undefined {
  const { f, c, niters, b, seed } = options;
  if (!(Number.isInteger(f) && f >= 0)) return `dnc needs f to be a whole number ≥ 0; got f=${f}`;
  if (!(c > 0 && Number.isFinite(c))) return `dnc needs a filtering fraction c > 0; got c=${c}`;
  if (!(Number.isInteger(niters) && niters >= 1)) return `dnc needs niters to be a whole number ≥ 1; got niters=${niters}`;
  if (!(Number.isInteger(b) && b >= 1)) return `dnc needs b to be a whole number ≥ 1; got b=${b}`;
  if (!Number.isInteger(seed)) return `dnc needs an integer seed; got seed=${seed}`;
  const k = dncFlagged(c, f);
  if (n <= k) {
    return `dnc with f=${f} and c=${c} flags the ⌊c·f⌋ = ${k} highest outlier scores in each iteration, so it needs more than ${k} updates (n > c·f); this round has ${n}`;
  }
  return undefined;
}

const dncSchema = ruleSchema('dnc', {
  f: byzantineCount,
  c: z.number().positive().default(1).describe('filtering fraction: each iteration flags the ⌊c·f⌋ updates with the highest outlier scores'),
  niters: z
    .number()
    .int()
    .positive()
    .max(100)
    .default(5)
    .describe('iterations, each on a fresh random sample of b coordinates; an update flagged in any of them is left out'),
  b: z
    .number()
    .int()
    .positive()
    .default(10000)
    .describe('coordinates sampled per iteration; all of them when the update is shorter'),
  seed: z
    .number()
    .int()
    .default(0)
    .describe('seed of the coordinate sampling (with the iteration number); replay draws the same coordinates'),
});

/** Divide-and-Conquer (Shejwalkar & Houmansadr, NDSS 2021). Unweighted. */
export const dncRule: RobustRule<typeof dncSchema> = {
  name: 'dnc',
  schema: dncSchema,
  weighted: false,
  minUpdates: (spec) => dncMinUpdates(spec.c, spec.f),
  precondition: { text: 'n > c·f', check: (spec, n) => dncPrecondition(spec, n) },
  afterSettingAside: (spec, setAside) => ({ ...spec, f: byzantineLeft(spec.f, setAside) }),
  apply: (spec, updates) => dnc(updates, spec),
};

/**
 * The coordinates iteration `iteration` (0-based) looks at: b of 0..d−1
 * drawn uniformly without replacement (Floyd's algorithm) from
 * Rng.derive(seed, 'dnc', iteration), in ascending order; all d of them when
 * b ≥ d. Depends on nothing else, so replay draws the same ones.
 */
export function sampleCoordinates(d: number, b: number, seed: number, iteration: number): Uint32Array {
  if (b >= d) return Uint32Array.from({ length: d }, (_, j) => j);
  const rng = Rng.derive(seed, 'dnc', iteration);
  const chosen = new Set<number>();
  for (let j = d - b; j < d; j++) {
    const t = rng.int(j + 1);
    chosen.add(chosen.has(t) ? j : t);
  }
  return Uint32Array.from(chosen).sort();
}

/**
 * Outlier scores over the given coordinates: with μ the mean of the updates
 * there and v the top right singular vector of the centered rows uᵢ − μ,
 * sᵢ = ⟨uᵢ − μ, v⟩². In float64.
 *
 * v is found without forming it: power iteration on the n×n Gram matrix
 * K = C·Cᵀ of the centered rows C, from a fixed pseudo-random start vector
 * (the same for every seed: the seed only chooses coordinates), until the
 * unit vector x moves by less than POWER_TOLERANCE (L2) or after
 * POWER_MAX_STEPS steps. Then v = Cᵀx/‖Cᵀx‖, so sᵢ = (Kx)ᵢ² / xᵀKx: the
 * exact scores for the v found. All scores are 0 when the rows coincide there.
 * Plain float64 loops in a fixed order: the same inputs give the same bits.
 */
export function outlierScores(updates: readonly Float32Array[], coordinates: Uint32Array): Float64Array {
  const n = updates.length;
  const b = coordinates.length;
  // Centered rows, n × b. Centering before the products (rather than from the Gram matrix of the raw
  // rows, as kernels/vectors.ts computes it) keeps the digits a large common mean would cancel.
  const C = new Float64Array(n * b);
  for (let k = 0; k < b; k++) {
    const j = coordinates[k]!;
    let s = 0;
    for (let i = 0; i < n; i++) s += updates[i]![j]!;
    const mu = s / n;
    for (let i = 0; i < n; i++) C[i * b + k] = updates[i]![j]! - mu;
  }
  const K = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let l = i; l < n; l++) {
      let s = 0;
      for (let k = 0, p = i * b, q = l * b; k < b; k++, p++, q++) s += C[p]! * C[q]!;
      K[i * n + l] = s;
      K[l * n + i] = s;
    }
  }
  const start = Rng.derive(0, 'dnc', 'power iteration start');
  const x = Float64Array.from({ length: n }, () => start.normal());
  const Kx = new Float64Array(n);
  // A first step outside the loop takes out the start's part in K's null space (e.g. along 1: Σᵢ Cᵢ = 0).
  multiply(K, x, n, Kx);
  x.set(Kx);
  normalise(x);
  for (let step = 0; step < POWER_MAX_STEPS; step++) {
    multiply(K, x, n, Kx);
    const norm = Math.sqrt(dot(Kx, Kx));
    if (norm === 0) break;
    let moved = 0;
    for (let i = 0; i < n; i++) {
      const next = Kx[i]! / norm;
      moved += (next - x[i]!) ** 2;
      x[i] = next;
    }
    if (Math.sqrt(moved) < POWER_TOLERANCE) break;
  }
  multiply(K, x, n, Kx);
  const lambda = dot(x, Kx);
  return Float64Array.from(Kx, (v) => (lambda > 0 ? (v * v) / lambda : 0));
}

function multiply(K: Float64Array, x: Float64Array, n: number, out: Float64Array): Float64Array {
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let l = 0; l < n; l++) s += K[i * n + l]! * x[l]!;
    out[i] = s;
  }
  return out;
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

function normalise(x: Float64Array): void {
  const norm = Math.sqrt(dot(x, x));
  if (norm > 0) for (let i = 0; i < x.length; i++) x[i]! /= norm;
}

/**
 * Divide-and-Conquer (Shejwalkar & Houmansadr, NDSS 2021, Algorithm 2).
 * In each of `niters` iterations: sample b coordinates (sampleCoordinates),
 * score every update by its squared projection on the top singular direction
 * of the centered sample (outlierScores), and flag the ⌊c·f⌋ highest scores
 * (equal scores: the lower index first). The aggregate is the unweighted mean
 * of the updates never flagged. Inputs must be finite (`aggregate` pre-filters them).
 *
 * n > c·f leaves updates unflagged in every iteration, but different
 * iterations can flag different ones; should every update be flagged at least
 * once (possible only when niters·⌊c·f⌋ ≥ n), the mean of none is undefined,
 * and DnC keeps the updates flagged in the fewest iterations instead (which is
 * the never-flagged set whenever that is not empty).
 *
 * Verdicts: kept (weight 1/|kept|) or rejected (weight 0). Score: the update's
 * highest outlier score over the iterations, in units of that iteration's mean
 * score (the scores sum to σ₁², so 1 is an equal share of the spread along the
 * top direction; at most n).
 */
export function dnc(updates: readonly Float32Array[], options: DncOptions): AggregationResult {
  const problem = dncPrecondition(options, updates.length);
  if (problem) throw new AggregationError(problem);
  const d = checkSameLength(updates);
  const n = updates.length;
  const { f, c, niters, b, seed } = options;
  const k = dncFlagged(c, f);

  // flaggedIn[i]: the iterations (1-based) that flagged update i.
  const flaggedIn: number[][] = Array.from({ length: n }, () => []);
  // Per iteration: every update's score in units of the iteration's mean score, and the cut (the highest not flagged).
  const normalised: Float64Array[] = [];
  const cut: number[] = [];
  let scores: Float64Array | undefined;
  for (let t = 0; t < niters; t++) {
    // With b ≥ d every iteration looks at all coordinates and scores the same.
    if (scores === undefined || b < d) {
      scores = outlierScores(updates, sampleCoordinates(d, b, seed, t));
    }
    const s = scores;
    const mean = s.reduce((a, x) => a + x, 0) / n;
    normalised.push(Float64Array.from(s, (x) => (mean > 0 ? x / mean : 0)));
    const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => s[j]! - s[i]! || i - j);
    for (let r = 0; r < k; r++) flaggedIn[order[r]!]!.push(t + 1);
    cut.push(normalised[t]![order[k]!]!);
  }

  const fewest = Math.min(...flaggedIn.map((its) => its.length));
  const kept = flaggedIn.map((its) => its.length === fewest);
  const m = kept.filter(Boolean).length;
  const aggregate = weightedSum(
    updates.filter((_, i) => kept[i]),
    new Array<number>(m).fill(1 / m),
  );

  const rule = `each flags the ${k} highest of ${n} outlier scores`;
  const iterations = (its: readonly number[]) => `iteration${its.length === 1 ? '' : 's'} ${its.join(', ')} of ${niters}`;
  const verdicts: Verdict[] = flaggedIn.map((its, i) => {
    const score = Math.max(...normalised.map((ns) => ns[i]!));
    if (kept[i]) {
      const why =
        fewest === 0
          ? `never flagged in ${niters} iteration${niters === 1 ? '' : 's'} (${rule})`
          : `flagged in ${iterations(its)}, the fewest of any update (${rule}; every update was flagged at least once, so the least flagged are kept)`;
      return { verdict: 'kept', weight: 1 / m, score, reason: `dnc outlier score at most ${num(score)}× the mean; ${why}; one of ${m} kept` };
    }
    // The flagging iteration where it stood out most, against that iteration's cut.
    const t = its.reduce((a, it) => (normalised[it - 1]![i]! > normalised[a - 1]![i]! ? it : a)) - 1;
    // Not evidence by itself: DnC flags ⌊c·f⌋ updates per iteration whether or not anyone attacks (in a
    // clean 10-node run it left out 4–5 honest updates a round). The evidence checks (evidence.ts) decide.
    return {
      verdict: 'not-selected',
      weight: 0,
      score,
      reason:
        `dnc outlier score ${num(normalised[t]![i]!)}× the mean in iteration ${t + 1}, where the highest not flagged was ` +
        `${num(cut[t]!)}×; flagged in ${iterations(its)} (${rule})` +
        (fewest > 0 ? `; every update was flagged at least once, and those flagged ${fewest}× are kept` : ''),
    };
  });
  return { aggregate, verdicts };
}

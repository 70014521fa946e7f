import { z } from 'zod';
import { num } from './format.js';
import { pairwiseSquaredDistances, weightedSum } from './kernels/vectors.js';
import { ruleSchema, type RobustRule } from './rule.js';
import { AggregationError, checkSameLength, type AggregationResult, type Verdict } from './verdict.js';

/** Krum and Multi-Krum need n > 2f + 2 updates (Blanchard et al. 2017). */
export function krumMinUpdates(f: number): number {
  return 2 * f + 3;
}

export function krumPrecondition(f: number, n: number, m?: number): string | undefined {
  const rule = m === undefined ? 'krum' : 'multi-krum';
  if (!(Number.isInteger(f) && f >= 0)) return `${rule} needs f to be a whole number ≥ 0; got f=${f}`;
  if (n <= 2 * f + 2) return `${rule} with f=${f} needs more than ${2 * f + 2} updates (n > 2f + 2); this round has ${n}`;
  if (m !== undefined) {
    if (!(Number.isInteger(m) && m >= 1)) return `multi-krum needs m to be a whole number ≥ 1; got m=${m}`;
    if (m > n - f) return `multi-krum with f=${f} averages at most n − f = ${n - f} of this round's ${n} updates (1 ≤ m ≤ n − f); m=${m}`;
  }
  return undefined;
}

/** The `f` field of krum, multi-krum and bulyan. */
export const byzantineCount = z.number().int().nonnegative().describe('f: how many Byzantine updates the rule must tolerate');

/**
 * f for a second aggregation after `setAside` updates were left out on evidence (reject_flagged): each
 * counts as one of the f Byzantine updates the rule was configured to tolerate. A false flag thus
 * lowers the bound for the rest; the evidence checks' false-flag rate is what bounds that cost.
 */
export function byzantineLeft(f: number, setAside: number): number {
  return Math.max(0, f - setAside);
}

const krumSchema = ruleSchema('krum', { f: byzantineCount });

export const krumRule: RobustRule<typeof krumSchema> = {
  name: 'krum',
  schema: krumSchema,
  weighted: false,
  minUpdates: (spec) => krumMinUpdates(spec.f),
  precondition: { text: 'n > 2f + 2', check: (spec, n) => krumPrecondition(spec.f, n) },
  afterSettingAside: (spec, setAside) => ({ ...spec, f: byzantineLeft(spec.f, setAside) }),
  apply: (spec, updates) => krum(updates, spec.f),
};

const multiKrumSchema = ruleSchema('multi-krum', {
  f: byzantineCount,
  m: z.number().int().positive().describe('how many of the best-scored updates are averaged'),
});

export const multiKrumRule: RobustRule<typeof multiKrumSchema> = {
  name: 'multi-krum',
  schema: multiKrumSchema,
  weighted: false,
  // Krum's bound, and m of the n − f updates it may average.
  minUpdates: (spec) => Math.max(krumMinUpdates(spec.f), spec.m + spec.f),
  precondition: { text: 'n > 2f + 2 and 1 ≤ m ≤ n − f', check: (spec, n) => krumPrecondition(spec.f, n, spec.m) },
  afterSettingAside: (spec, setAside, left) => {
    const f = byzantineLeft(spec.f, setAside);
    return { ...spec, f, m: Math.max(1, Math.min(spec.m, left - f)) };
  },
  apply: (spec, updates) => multiKrum(updates, spec.f, spec.m),
};

/**
 * Krum scores from pairwise squared distances D (n×n): for each member i,
 * the sum of its squared distances to the |members| − f − 2 closest other
 * members (at least 0 of them). Entries for non-members are NaN.
 */
export function krumScores(D: Float64Array, n: number, f: number, members?: readonly number[]): Float64Array {
  const set = members ?? Array.from({ length: n }, (_, i) => i);
  const r = set.length;
  // n − f − 2 neighbours, as Blanchard et al. score; at least one while there is another member, as the
  // reference implementation does: Bulyan's last iterations (r ≤ f + 2) would otherwise score every
  // member 0, and the lowest index, Byzantine or not, would win.
  const neighbours = Math.min(Math.max(0, r - 1), Math.max(1, r - f - 2));
  const scores = new Float64Array(n).fill(NaN);
  const row = new Float64Array(Math.max(0, r - 1));
  for (const i of set) {
    let k = 0;
    for (const j of set) if (j !== i) row[k++] = D[i * n + j]!;
    row.sort();
    let s = 0;
    for (let q = 0; q < neighbours; q++) s += row[q]!;
    scores[i] = s;
  }
  return scores;
}

/** Members ordered by score, lowest first; equal scores by index. */
export function byScore(scores: Float64Array, members: readonly number[]): number[] {
  return [...members].sort((a, b) => scores[a]! - scores[b]! || a - b);
}

/**
 * Krum (Blanchard et al. 2017): the update whose n − f − 2 nearest
 * neighbours are closest (sum of squared distances) is the aggregate.
 * Unweighted. Pairwise distances come from the blocked Gram matrix.
 */
export function krum(updates: readonly Float32Array[], f: number): AggregationResult {
  return selectByKrum(updates, f, 1, krumPrecondition(f, updates.length));
}

/**
 * Multi-Krum (Blanchard et al. 2017): the unweighted mean of the m updates
 * with the lowest Krum scores. m = 1 is Krum.
 */
export function multiKrum(updates: readonly Float32Array[], f: number, m: number): AggregationResult {
  return selectByKrum(updates, f, m, krumPrecondition(f, updates.length, m));
}

function selectByKrum(updates: readonly Float32Array[], f: number, m: number, problem: string | undefined): AggregationResult {
  if (problem) throw new AggregationError(problem);
  checkSameLength(updates);
  const n = updates.length;
  const scores = krumScores(pairwiseSquaredDistances(updates), n, f);
  const order = byScore(scores, Array.from({ length: n }, (_, i) => i));
  const rank = new Array<number>(n);
  order.forEach((i, r) => (rank[i] = r));
  const coeffs = new Array<number>(n).fill(0);
  for (let r = 0; r < m; r++) coeffs[order[r]!] = 1 / m;
  const aggregate = m === 1 ? Float32Array.from(updates[order[0]!]!) : weightedSum(updates, coeffs);
  const what = m === 1 ? 'the 1 selected' : `the ${m} selected`;
  const verdicts: Verdict[] = [];
  for (let i = 0; i < n; i++) {
    const score = scores[i]!;
    const r = rank[i]!;
    verdicts.push(
      r < m
        ? { verdict: 'kept', weight: 1 / m, score, reason: `krum score ${num(score)}, among ${what} (rank ${r + 1} of ${n})` }
        : { verdict: 'not-selected', weight: 0, score, reason: `krum score ${num(score)}, not among ${what} (rank ${r + 1} of ${n})` },
    );
  }
  return { aggregate, verdicts };
}

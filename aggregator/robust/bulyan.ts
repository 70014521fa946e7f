import { closestToMedian } from './kernels/coordinate.js';
import { num, percent } from './format.js';
import { pairwiseSquaredDistances } from './kernels/vectors.js';
import { byScore, byzantineCount, byzantineLeft, krumScores } from './krum.js';
import { ruleSchema, type RobustRule } from './rule.js';
import { AggregationError, checkSameLength, type AggregationResult, type Verdict } from './verdict.js';

/** Bulyan needs n ≥ 4f + 3 updates (El Mhamdi et al. 2018). */
export function bulyanMinUpdates(f: number): number {
  return 4 * f + 3;
}

export function bulyanPrecondition(f: number, n: number): string | undefined {
  if (!(Number.isInteger(f) && f >= 0)) return `bulyan needs f to be a whole number ≥ 0; got f=${f}`;
  if (n < 4 * f + 3) return `bulyan with f=${f} needs at least ${4 * f + 3} updates (n ≥ 4f + 3); this round has ${n}`;
  return undefined;
}

const bulyanSchema = ruleSchema('bulyan', { f: byzantineCount });

export const bulyanRule: RobustRule<typeof bulyanSchema> = {
  name: 'bulyan',
  schema: bulyanSchema,
  weighted: false,
  minUpdates: (spec) => bulyanMinUpdates(spec.f),
  precondition: { text: 'n ≥ 4f + 3', check: (spec, n) => bulyanPrecondition(spec.f, n) },
  afterSettingAside: (spec, setAside) => ({ ...spec, f: byzantineLeft(spec.f, setAside) }),
  apply: (spec, updates) => bulyan(updates, spec.f),
};

/**
 * Bulyan (El Mhamdi et al. 2018). Stage 1: Krum is applied repeatedly to the
 * updates not yet chosen (with the same f), each time moving the winner to
 * the selection, until θ = n − 2f are selected. Stage 2: per coordinate, the
 * mean of the β = θ − 2f selected values closest to the selection's median.
 * Unweighted.
 *
 * Verdicts: updates left out in stage 1 are not selected (score: their Krum score
 * over all n updates); selected ones get stage 2's coordinate-wise verdict
 * (weight: average share of the aggregate; 'kept' from half of a fair share,
 * 1/θ, up; score: fraction of coordinates where they were not among the β).
 * Inputs must be finite (`aggregate` pre-filters them).
 */
export function bulyan(updates: readonly Float32Array[], f: number): AggregationResult {
  const problem = bulyanPrecondition(f, updates.length);
  if (problem) throw new AggregationError(problem);
  checkSameLength(updates);
  const n = updates.length;
  const theta = n - 2 * f;
  const beta = theta - 2 * f;
  const D = pairwiseSquaredDistances(updates);
  const firstScores = krumScores(D, n, f);

  let remaining = Array.from({ length: n }, (_, i) => i);
  const selected: number[] = [];
  while (selected.length < theta) {
    const best = byScore(krumScores(D, n, f, remaining), remaining)[0]!;
    selected.push(best);
    remaining = remaining.filter((i) => i !== best);
  }
  const step = new Map(selected.map((i, s) => [i, s + 1]));
  const chosen = [...selected].sort((a, b) => a - b);
  const usage = closestToMedian(
    chosen.map((i) => updates[i]!),
    beta,
  );
  const fair = 1 / theta;
  const verdicts: Verdict[] = [];
  for (let i = 0; i < n; i++) {
    const s = step.get(i);
    if (s === undefined) {
      verdicts.push({
        verdict: 'not-selected',
        weight: 0,
        score: firstScores[i]!,
        reason: `krum score ${num(firstScores[i]!)}, not among the θ=${theta} selected by Bulyan's iterated Krum`,
      });
      continue;
    }
    const c = chosen.indexOf(i);
    const weight = usage.weight[c]!;
    const unused = usage.unused[c]!;
    verdicts.push({
      verdict: weight === 0 ? 'not-selected' : weight >= 0.5 * fair ? 'kept' : 'down-weighted',
      weight,
      score: unused,
      reason:
        `selected by iterated Krum (step ${s} of ${theta}); not among the β=${beta} values closest to the median ` +
        `in ${percent(unused)} of coordinates; share ${percent(weight)} (a fair share is ${percent(fair)})`,
    });
  }
  return { aggregate: usage.aggregate, verdicts };
}

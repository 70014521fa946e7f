import { z } from 'zod';
import { coordinateVerdicts, rankWindow } from './kernels/coordinate.js';
import { ruleSchema, type RobustRule } from './rule.js';
import { AggregationError, checkSameLength, type AggregationResult } from './verdict.js';

/**
 * How many values the β-trimmed mean drops from each end of a coordinate:
 * ⌊βn⌋ (with a little slack so that e.g. β = 0.29, n = 100 trims 29, not the
 * 28 that 0.29 × 100 = 28.999999999999996 would give).
 */
export function trimmedCount(beta: number, n: number): number {
  return Math.floor(beta * n + 1e-9);
}

/** The trimmed mean keeps n − 2⌊βn⌋ ≥ 1 values per coordinate. */
export function trimmedMeanMinUpdates(beta: number): number {
  let n = 1;
  while (n - 2 * trimmedCount(beta, n) < 1) n++;
  return n;
}

export function trimmedMeanPrecondition(beta: number, n: number): string | undefined {
  if (!(beta >= 0 && beta < 0.5)) return `trimmed-mean needs 0 ≤ β < 0.5; got β=${beta}`;
  if (n < 1) return 'trimmed-mean needs at least 1 update; this round has 0';
  const t = trimmedCount(beta, n);
  if (n - 2 * t < 1) return `trimmed-mean with β=${beta} trims ${t} values from each end of ${n} and keeps none (n − 2⌊βn⌋ ≥ 1)`;
  return undefined;
}

const trimmedMeanSchema = ruleSchema('trimmed-mean', {
  beta: z.number().min(0).lt(0.5).describe('fraction trimmed from each end, per coordinate'),
});

export const trimmedMeanRule: RobustRule<typeof trimmedMeanSchema> = {
  name: 'trimmed-mean',
  schema: trimmedMeanSchema,
  weighted: false,
  minUpdates: (spec) => trimmedMeanMinUpdates(spec.beta),
  precondition: { text: 'n − 2⌊βn⌋ ≥ 1', check: (spec, n) => trimmedMeanPrecondition(spec.beta, n) },
  apply: (spec, updates) => trimmedMean(updates, spec.beta),
};

/**
 * Coordinate-wise β-trimmed mean (Yin et al. 2018): per coordinate, drop the
 * ⌊βn⌋ largest and ⌊βn⌋ smallest values and average the rest. Unweighted:
 * example counts are not trusted.
 *
 * Verdicts: weight = the update's share of the aggregate averaged over
 * coordinates; score = the fraction of coordinates where it was trimmed.
 * Inputs must be finite (`aggregate` pre-filters them).
 */
export function trimmedMean(updates: readonly Float32Array[], beta: number): AggregationResult {
  const problem = trimmedMeanPrecondition(beta, updates.length);
  if (problem) throw new AggregationError(problem);
  checkSameLength(updates);
  const n = updates.length;
  const t = trimmedCount(beta, n);
  const usage = rankWindow(updates, t, n - t);
  return { aggregate: usage.aggregate, verdicts: coordinateVerdicts(usage, 'trimmed') };
}

import { weightedSum } from './kernels/vectors.js';
import { examplesCapField, normRatioField } from './pre-filter.js';
import { atLeastOneUpdate, ruleSchema, type RobustRule } from './rule.js';
import { AggregationError, checkSameLength, type AggregationResult } from './verdict.js';

/** The mean needs one update. */
export const MEAN_MIN_UPDATES = 1;

/** With no robustness of its own, the mean rejects an update over 10× the round's median norm unless the experiment says otherwise. */
export const MEAN_MAX_NORM_RATIO = 10;

const meanSchema = ruleSchema('mean', {}, { max_norm_ratio: normRatioField(MEAN_MAX_NORM_RATIO), max_examples_ratio: examplesCapField });

/** FedAvg's mean, weighted by example counts. */
export const meanRule: RobustRule<typeof meanSchema> = {
  name: 'mean',
  schema: meanSchema,
  weighted: true,
  minUpdates: () => MEAN_MIN_UPDATES,
  precondition: { text: 'n ≥ 1', check: (spec, n) => atLeastOneUpdate(spec.rule, n) },
  apply: (_spec, updates, examples) => weightedMean(updates, examples),
};

/**
 * FedAvg's weighted mean: Σ wᵢ·uᵢ / Σ wᵢ, with wᵢ the number of examples
 * behind update i. Accumulates in float64 so the result does not depend on
 * the order the updates arrived in beyond float32's last bit. Streams the
 * updates block by block, four at a time (see kernels.ts).
 */
export function weightedMean(updates: readonly Float32Array[], weights: readonly number[]): AggregationResult {
  checkSameLength(updates);
  if (weights.length !== updates.length) {
    throw new AggregationError(`${updates.length} updates but ${weights.length} weights`);
  }
  weights.forEach((w, i) => {
    if (!(w > 0) || !Number.isFinite(w)) throw new AggregationError(`weight ${i} is ${w}; weights must be positive`);
  });
  const total = weights.reduce((a, b) => a + b, 0);
  const shares = weights.map((w) => w / total);
  return {
    aggregate: weightedSum(updates, shares),
    verdicts: shares.map((weight) => ({ verdict: 'kept' as const, weight, reason: 'weighted by examples' })),
  };
}

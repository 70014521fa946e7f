import { coordinateVerdicts, rankWindow } from './kernels/coordinate.js';
import { atLeastOneUpdate, ruleSchema, type RobustRule } from './rule.js';
import { AggregationError, checkSameLength, type AggregationResult } from './verdict.js';

/** The coordinate-wise median needs one update. */
export const MEDIAN_MIN_UPDATES = 1;

const medianSchema = ruleSchema('median', {});

export const medianRule: RobustRule<typeof medianSchema> = {
  name: 'median',
  schema: medianSchema,
  weighted: false,
  minUpdates: () => MEDIAN_MIN_UPDATES,
  precondition: { text: 'n ≥ 1', check: (spec, n) => atLeastOneUpdate(spec.rule, n) },
  apply: (_spec, updates) => coordinateMedian(updates),
};

/**
 * Coordinate-wise median (Yin et al. 2018): each coordinate of the aggregate
 * is the median of that coordinate over the updates (the mean of the two
 * middle values when n is even). Unweighted: example counts are not trusted.
 *
 * Verdicts: an update's weight is its share of the aggregate averaged over
 * coordinates (1 where it is the median, ½ where it is one of the two middle
 * values, 0 elsewhere); score is the fraction of coordinates where it was not
 * used. Inputs must be finite (`aggregate` pre-filters them).
 */
export function coordinateMedian(updates: readonly Float32Array[]): AggregationResult {
  if (updates.length < MEDIAN_MIN_UPDATES) throw new AggregationError('median needs at least 1 update; this round has 0');
  checkSameLength(updates);
  const n = updates.length;
  const lo = (n - 1) >> 1;
  const usage = rankWindow(updates, lo, n - lo);
  return { aggregate: usage.aggregate, verdicts: coordinateVerdicts(usage, 'unused') };
}

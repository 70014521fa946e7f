import { AggregationError, checkSameLength, type AggregationResult } from './verdict.js';

/**
 * FedAvg's weighted mean: Σ wᵢ·uᵢ / Σ wᵢ, with wᵢ the number of examples
 * behind update i. Accumulates in float64 so the result does not depend on
 * the order the updates arrived in beyond float32's last bit.
 */
export function weightedMean(updates: readonly Float32Array[], weights: readonly number[]): AggregationResult {
  const d = checkSameLength(updates);
  if (weights.length !== updates.length) {
    throw new AggregationError(`${updates.length} updates but ${weights.length} weights`);
  }
  weights.forEach((w, i) => {
    if (!(w > 0) || !Number.isFinite(w)) throw new AggregationError(`weight ${i} is ${w}; weights must be positive`);
  });
  const total = weights.reduce((a, b) => a + b, 0);
  const acc = new Float64Array(d);
  for (let i = 0; i < updates.length; i++) {
    const u = updates[i]!;
    const share = weights[i]! / total;
    for (let j = 0; j < d; j++) acc[j]! += share * u[j]!;
  }
  return {
    aggregate: Float32Array.from(acc),
    verdicts: weights.map((w) => ({ verdict: 'kept' as const, weight: w / total, reason: 'weighted by examples' })),
  };
}

/** What an aggregator decided about one update, and why. */
export interface Verdict {
  readonly verdict: 'kept' | 'down-weighted' | 'rejected';
  /** The update's share of the aggregate (0 when rejected); shares sum to 1. */
  readonly weight: number;
  readonly reason: string;
  readonly score?: number;
}

export interface AggregationResult {
  readonly aggregate: Float32Array;
  readonly verdicts: readonly Verdict[];
}

export class AggregationError extends Error {}

export function checkSameLength(updates: readonly Float32Array[]): number {
  if (updates.length === 0) throw new AggregationError('no updates to aggregate');
  const d = updates[0]!.length;
  updates.forEach((u, i) => {
    if (u.length !== d) throw new AggregationError(`update ${i} has ${u.length} values, update 0 has ${d}`);
  });
  return d;
}

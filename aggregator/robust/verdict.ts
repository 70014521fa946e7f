/**
 * What an aggregator decided about one update, and why.
 *
 * The verdict says what part the update had in the aggregate: 'kept' (at least half a fair share),
 * 'down-weighted' (less), 'not-selected' (none, because the rule keeps only so many: Multi-Krum its m,
 * Bulyan its θ, a median one value per coordinate; this says nothing against the update) or 'rejected'
 * (none, because of evidence against it). `evidence` is that evidence: set on every 'rejected' verdict,
 * and on an update the rule used but that still looks Byzantine (far from the aggregate, a copy of
 * another node's). Only evidence moves a node's reputation (nodes/reputation.ts).
 */
export interface Verdict {
  readonly verdict: VerdictKind;
  /** The update's share of the aggregate (0 when not selected or rejected); shares sum to 1. */
  readonly weight: number;
  readonly reason: string;
  readonly score?: number;
  /** Why the update looks Byzantine; always set when the verdict is 'rejected'. */
  readonly evidence?: string;
}

export type VerdictKind = 'kept' | 'down-weighted' | 'not-selected' | 'rejected';

/** Whether a verdict holds evidence against its update (and so counts against its node). */
export function hasEvidence(v: Pick<Verdict, 'verdict' | 'evidence'>): boolean {
  return v.verdict === 'rejected' || v.evidence !== undefined;
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

// Evidence against updates, looked for after the rule has aggregated, the same way for every rule.
//
// A rule's capacity is not evidence: Multi-Krum keeps m updates and Bulyan θ whether or not anyone
// attacks, and a coordinate-wise median uses one value per coordinate. What is evidence is an update
// that sits where honest ones do not:
//   - far from the aggregate: its distance to the aggregate is more than `outlier_distance_ratio`
//     times the round's median distance (honest updates of one round sit at similar distances: with
//     20 nodes training the 2NN on Fashion-MNIST, the farthest honest one was at 1.05–1.16× the
//     median on IID data and 1.25–1.38× on Dirichlet(0.5) label skew);
//   - a copy: its distance to another node's update is under `duplicate_distance_ratio` times the
//     round's median pairwise distance. Honest nodes train on their own data from their own task
//     seeds, so no two of their updates coincide (the closest honest pair was at 0.82× the median on
//     IID data, 0.51× on Dirichlet(0.5));
//     colluders that send one crafted vector (ALIE, IPM, Min-Max, Min-Sum) and free-riders do.
// Only evidence moves reputation and bans (nodes/reputation.ts).

import { createHash } from 'node:crypto';
import { z } from 'zod';
import { num } from './format.js';
import { pairwiseSquaredDistances, stepAndDistances } from './kernels/vectors.js';

/** The evidence checks' fields in every rule's `aggregation` section (rule.ts ruleSchema adds them). */
export const evidenceFields = {
  outlier_distance_ratio: z
    .number()
    .gt(1)
    .nullable()
    .default(2)
    .describe(
      "evidence: an update farther from the aggregate than this many times the round's median distance is flagged as an outlier (null: no check)",
    ),
  duplicate_distance_ratio: z
    .number()
    .gt(0)
    .lt(1)
    .nullable()
    .default(0.1)
    .describe(
      "evidence: updates closer to another node's update than this many times the round's median pairwise distance are flagged as copies (null: no check)",
    ),
  reject_flagged: z
    .boolean()
    .default(false)
    .describe(
      'aggregate again without the updates the evidence checks flagged, so copies and far outliers get no weight under any rule ' +
        '(a similarity defence against Sybils in the spirit of FoolsGold, Fung et al. 2020); off: the rule alone decides weights',
    ),
};

/** The evidence checks off: for looking at a rule's own verdicts alone. */
export const EVIDENCE_OFF = { outlier_distance_ratio: null, duplicate_distance_ratio: null, reject_flagged: false } as const;

export interface EvidenceSpec {
  readonly outlier_distance_ratio?: number | null | undefined;
  readonly duplicate_distance_ratio?: number | null | undefined;
  /** Aggregate again without the flagged updates. */
  readonly reject_flagged?: boolean | undefined;
}

/**
 * Above this many updates, copies are found by their bytes only (identical updates): the pairwise
 * distances near-copies need cost n² passes over the parameters.
 */
export const NEAR_DUPLICATE_MAX_UPDATES = 200;

/** The fewest updates for which medians over the round say anything: with fewer, no evidence is looked for. */
export const EVIDENCE_MIN_UPDATES = 4;

/**
 * For each update, why it looks Byzantine, or undefined. `updates` are the ones the rule aggregated
 * (finite, one length), `aggregate` its result; the result is in input order.
 */
export function findEvidence(updates: readonly Float32Array[], aggregate: Float32Array, spec: EvidenceSpec): (string | undefined)[] {
  const n = updates.length;
  const found: string[][] = Array.from({ length: n }, () => []);
  if (n >= EVIDENCE_MIN_UPDATES) {
    const outlierRatio = spec.outlier_distance_ratio ?? undefined;
    if (outlierRatio !== undefined) {
      const dist2 = new Float64Array(n);
      stepAndDistances(updates, Float64Array.from(aggregate), undefined, 0, dist2);
      const dist = Array.from(dist2, Math.sqrt);
      const median = medianOf(dist);
      dist.forEach((d, i) => {
        if (d > outlierRatio * median) {
          found[i]!.push(
            `its distance to the aggregate, ${num(d)}, is ${num(d / median)}× the round's median distance ${num(median)} (outlier_distance_ratio ${outlierRatio})`,
          );
        }
      });
    }
    const duplicateRatio = spec.duplicate_distance_ratio ?? undefined;
    if (duplicateRatio !== undefined && n > NEAR_DUPLICATE_MAX_UPDATES) {
      const groups = new Map<string, number[]>();
      updates.forEach((u, i) => {
        const key = createHash('sha256').update(new Uint8Array(u.buffer, u.byteOffset, u.byteLength)).digest('hex');
        groups.set(key, [...(groups.get(key) ?? []), i]);
      });
      for (const members of groups.values()) {
        if (members.length < 2) continue;
        for (const i of members) {
          found[i]!.push(
            `identical to ${members.length - 1} other update${members.length === 2 ? '' : 's'} of this round ` +
              `(byte for byte; above ${NEAR_DUPLICATE_MAX_UPDATES} updates only identical ones are looked for): copied or colluding`,
          );
        }
      }
    } else if (duplicateRatio !== undefined) {
      const D = pairwiseSquaredDistances(updates);
      const pairs: number[] = [];
      for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) pairs.push(Math.sqrt(D[i * n + j]!));
      const median = medianOf(pairs);
      const limit = duplicateRatio * median;
      for (let i = 0; i < n; i++) {
        const close: number[] = [];
        let nearest = Infinity;
        for (let j = 0; j < n; j++) {
          if (j === i) continue;
          const d = Math.sqrt(D[i * n + j]!);
          if (d <= limit) {
            close.push(j);
            nearest = Math.min(nearest, d);
          }
        }
        if (close.length > 0) {
          const what = nearest === 0 ? 'identical to' : 'nearly identical to';
          found[i]!.push(
            `${what} ${close.length} other update${close.length === 1 ? '' : 's'} of this round (nearest at distance ${num(nearest)}, ` +
              `the round's median pairwise distance is ${num(median)}; duplicate_distance_ratio ${duplicateRatio}): copied or colluding`,
          );
        }
      }
    }
  }
  return found.map((reasons) => (reasons.length ? reasons.join('; ') : undefined));
}

function medianOf(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

// Robust aggregation: one entry point over every rule in the experiment
// schema's `aggregation` section. `aggregate` runs the pre-filter, applies the
// rule to the updates that passed, and returns a verdict for every input in
// input order.

import type { AggregationRule, AggregationSpec } from '../experiment/schema.js';
import { bulyan, bulyanMinUpdates, bulyanPrecondition } from './bulyan.js';
import { centeredClipping } from './centered-clipping.js';
import { geometricMedian } from './geometric-median.js';
import { krum, krumMinUpdates, krumPrecondition, multiKrum } from './krum.js';
import { weightedMean } from './mean.js';
import { coordinateMedian } from './median.js';
import { preFilter } from './pre-filter.js';
import { trimmedMean, trimmedMeanMinUpdates, trimmedMeanPrecondition } from './trimmed-mean.js';
import { AggregationError, type AggregationResult, type Verdict } from './verdict.js';

export { AggregationError, type AggregationResult, type Verdict } from './verdict.js';
export { weightedMean, MEAN_MIN_UPDATES } from './mean.js';
export { coordinateMedian, MEDIAN_MIN_UPDATES } from './median.js';
export { trimmedMean, trimmedCount, trimmedMeanMinUpdates, trimmedMeanPrecondition } from './trimmed-mean.js';
export { krum, multiKrum, krumScores, krumMinUpdates, krumPrecondition } from './krum.js';
export { bulyan, bulyanMinUpdates, bulyanPrecondition } from './bulyan.js';
export { geometricMedian, GEOMETRIC_MEDIAN_MIN_UPDATES, type GeometricMedianOptions } from './geometric-median.js';
export { centeredClipping, CENTERED_CLIPPING_MIN_UPDATES, type CenteredClippingOptions } from './centered-clipping.js';
export { preFilter, type PreFilterOptions, type PreFilterOutcome, type PreFilterNote, type PreFilterSpec } from './pre-filter.js';

/** Rules that weight updates by their example counts; the others ignore them (Byzantine nodes can lie about them). */
export const WEIGHTED_RULES: ReadonlySet<AggregationRule> = new Set<AggregationRule>(['mean', 'geometric-median']);

/** Each rule's precondition on n, the number of updates that reach it (after the pre-filter). */
export const PRECONDITIONS: Readonly<Record<AggregationRule, string>> = {
  mean: 'n ≥ 1',
  median: 'n ≥ 1',
  'trimmed-mean': 'n − 2⌊βn⌋ ≥ 1',
  krum: 'n > 2f + 2',
  'multi-krum': 'n > 2f + 2 and 1 ≤ m ≤ n − f',
  bulyan: 'n ≥ 4f + 3',
  'geometric-median': 'n ≥ 1',
  'centered-clipping': 'n ≥ 1',
};

/** The fewest updates the rule accepts (for multi-krum, also n ≥ m + f). */
export function minUpdates(spec: AggregationSpec): number {
  switch (spec.rule) {
    case 'trimmed-mean':
      return trimmedMeanMinUpdates(spec.beta);
    case 'krum':
      return krumMinUpdates(spec.f);
    case 'multi-krum':
      return Math.max(krumMinUpdates(spec.f), spec.m + spec.f);
    case 'bulyan':
      return bulyanMinUpdates(spec.f);
    default:
      return 1;
  }
}

/** Why the rule cannot aggregate n updates, or undefined when it can. */
export function precondition(spec: AggregationSpec, n: number): string | undefined {
  switch (spec.rule) {
    case 'trimmed-mean':
      return trimmedMeanPrecondition(spec.beta, n);
    case 'krum':
      return krumPrecondition(spec.f, n);
    case 'multi-krum':
      return krumPrecondition(spec.f, n, spec.m);
    case 'bulyan':
      return bulyanPrecondition(spec.f, n);
    default:
      return n >= 1 ? undefined : `${spec.rule} needs at least 1 update; this round has ${n}`;
  }
}

export interface AggregateOptions {
  /** Where centered clipping starts (e.g. the previous aggregate); zeros when absent. */
  readonly center?: Float32Array;
  /** The model's parameter count: updates of another length are rejected. Without it, the length most updates have. */
  readonly length?: number;
}

/**
 * Applies the rule alone, without the pre-filter: every update must be
 * finite and of one length. Verdicts are in input order.
 */
export function applyRule(
  spec: AggregationSpec,
  updates: readonly Float32Array[],
  examples: readonly number[],
  options: AggregateOptions = {},
): AggregationResult {
  const problem = precondition(spec, updates.length);
  if (problem) throw new AggregationError(problem);
  switch (spec.rule) {
    case 'mean':
      return weightedMean(updates, examples);
    case 'median':
      return coordinateMedian(updates);
    case 'trimmed-mean':
      return trimmedMean(updates, spec.beta);
    case 'krum':
      return krum(updates, spec.f);
    case 'multi-krum':
      return multiKrum(updates, spec.f, spec.m);
    case 'bulyan':
      return bulyan(updates, spec.f);
    case 'geometric-median':
      return geometricMedian(updates, examples, {
        maxIterations: spec.max_iterations,
        smoothing: spec.smoothing,
        tolerance: spec.tolerance,
      });
    case 'centered-clipping':
      return centeredClipping(updates, { tau: spec.tau, iterations: spec.iterations, center: options.center });
  }
}

/**
 * The round's aggregate under `spec`: pre-filter (wrong length, non-finite
 * values, unusable example counts for weighted rules, max_norm → rejected;
 * clip_norm → scaled down, down-weighted), then the rule on the updates that
 * passed. Returns a verdict for every input, in input order; weights of the
 * updates not rejected sum to 1.
 *
 * Throws AggregationError when no update passes the pre-filter or the rule's
 * precondition does not hold for the ones that did.
 */
export function aggregate(
  spec: AggregationSpec,
  updates: readonly Float32Array[],
  examples: readonly number[],
  options: AggregateOptions = {},
): AggregationResult {
  const filtered = preFilter(updates, examples, spec, {
    length: options.length ?? options.center?.length,
    weighted: WEIGHTED_RULES.has(spec.rule),
  });
  const n = updates.length;
  const survivors = filtered.passed.length;
  const dropped = n - survivors;
  const afterFilter = dropped > 0 ? ` (the pre-filter rejected ${dropped} of ${n}: ${rejections(filtered.notes)})` : '';
  if (survivors === 0 && n > 0) throw new AggregationError(`no update passed the pre-filter${afterFilter}`);
  const problem = precondition(spec, survivors);
  if (problem) throw new AggregationError(problem + afterFilter);

  const result = applyRule(spec, filtered.updates, filtered.examples, options);
  // A pre-filter rejection's score is the update's L2 norm (NaN, i.e. none, when its length was wrong).
  const verdicts: Verdict[] = filtered.notes.map((note, i) =>
    note?.kind === 'rejected'
      ? { verdict: 'rejected', weight: 0, reason: note.reason, ...(Number.isFinite(filtered.norms[i]!) ? { score: filtered.norms[i]! } : {}) }
      : { verdict: 'kept', weight: 0, reason: '' },
  );
  filtered.passed.forEach((i, k) => {
    const v = result.verdicts[k]!;
    const note = filtered.notes[i];
    verdicts[i] =
      note?.kind === 'clipped'
        ? { ...v, verdict: v.verdict === 'kept' ? 'down-weighted' : v.verdict, reason: `${note.reason}; ${v.reason}` }
        : v;
  });
  return { aggregate: result.aggregate, verdicts };
}

function rejections(notes: readonly ({ kind: string; reason: string } | undefined)[]): string {
  const reasons = notes.flatMap((note, i) => (note?.kind === 'rejected' ? [`update ${i} ${note.reason}`] : []));
  return reasons.length <= 3 ? reasons.join('; ') : `${reasons.slice(0, 3).join('; ')}; …`;
}

// Robust aggregation: one entry point over every rule in the experiment
// schema's `aggregation` section. `aggregate` runs the pre-filter, applies the
// rule to the updates that passed, and returns a verdict for every input in
// input order.

import { findEvidence } from './evidence.js';
import { preFilter } from './pre-filter.js';
import type { AggregateOptions } from './rule.js';
import { RULES, ruleFor, type AggregationRule, type AggregationSpec } from './rules.js';
import { AggregationError, type AggregationResult, type Verdict } from './verdict.js';

export { AggregationError, hasEvidence, type AggregationResult, type Verdict, type VerdictKind } from './verdict.js';
export { findEvidence, evidenceFields, type EvidenceSpec } from './evidence.js';
export { weightedMean, MEAN_MIN_UPDATES } from './mean.js';
export { coordinateMedian, MEDIAN_MIN_UPDATES } from './median.js';
export { trimmedMean, trimmedCount, trimmedMeanMinUpdates, trimmedMeanPrecondition } from './trimmed-mean.js';
export { krum, multiKrum, krumScores, krumMinUpdates, krumPrecondition } from './krum.js';
export { bulyan, bulyanMinUpdates, bulyanPrecondition } from './bulyan.js';
export { geometricMedian, GEOMETRIC_MEDIAN_MIN_UPDATES, type GeometricMedianOptions } from './geometric-median.js';
export { centeredClipping, CENTERED_CLIPPING_MIN_UPDATES, type CenteredClippingOptions } from './centered-clipping.js';
export { preFilter, type PreFilterOptions, type PreFilterOutcome, type PreFilterNote, type PreFilterSpec } from './pre-filter.js';
export type { AggregateOptions, RobustRule } from './rule.js';
export { RULES, ruleFor, aggregationSchema, type AggregationRule, type AggregationSpec } from './rules.js';

/** Rules that weight updates by their example counts; the others ignore them (Byzantine nodes can lie about them). */
export const WEIGHTED_RULES: ReadonlySet<AggregationRule> = new Set(RULES.filter((r) => r.weighted).map((r) => r.name));

/** Each rule's precondition on n, the number of updates that reach it (after the pre-filter). */
export const PRECONDITIONS = Object.fromEntries(RULES.map((r) => [r.name, r.precondition.text])) as Readonly<Record<AggregationRule, string>>;

/** The fewest updates the rule accepts (for multi-krum, also n ≥ m + f). */
export function minUpdates(spec: AggregationSpec): number {
  return ruleFor(spec).minUpdates(spec);
}

/** Why the rule cannot aggregate n updates, or undefined when it can. */
export function precondition(spec: AggregationSpec, n: number): string | undefined {
  return ruleFor(spec).precondition.check(spec, n);
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
  const rule = ruleFor(spec);
  const problem = rule.precondition.check(spec, updates.length);
  if (problem) throw new AggregationError(problem);
  return rule.apply(spec, updates, examples, options);
}

/**
 * The round's aggregate under `spec`: pre-filter (wrong length, non-finite
 * values, unusable example counts for weighted rules, max_norm → rejected;
 * clip_norm → scaled down, down-weighted), then the rule on the updates that
 * passed, then the evidence checks (evidence.ts) on those. Returns a verdict for
 * every input, in input order; weights of the updates in the aggregate sum to 1.
 * Every 'rejected' verdict has evidence; an update the rule left out without
 * evidence is 'not-selected'.
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
    weighted: ruleFor(spec).weighted,
  });
  const n = updates.length;
  const survivors = filtered.passed.length;
  const dropped = n - survivors;
  const afterFilter = dropped > 0 ? ` (the pre-filter rejected ${dropped} of ${n}: ${rejections(filtered.notes)})` : '';
  if (survivors === 0 && n > 0) throw new AggregationError(`no update passed the pre-filter${afterFilter}`);
  const problem = precondition(spec, survivors);
  if (problem) throw new AggregationError(problem + afterFilter);

  const first = applyRule(spec, filtered.updates, filtered.examples, options);
  const evidence = findEvidence(filtered.updates, first.aggregate, spec);
  const result = spec.reject_flagged ? withoutFlagged(spec, filtered, first, evidence, options) : first;
  // A pre-filter rejection's score is the update's L2 norm (NaN, i.e. none, when its length was wrong).
  const verdicts: Verdict[] = filtered.notes.map((note, i) =>
    note?.kind === 'rejected'
      ? {
          verdict: 'rejected',
          weight: 0,
          reason: note.reason,
          evidence: note.reason,
          ...(Number.isFinite(filtered.norms[i]!) ? { score: filtered.norms[i]! } : {}),
        }
      : { verdict: 'kept', weight: 0, reason: '' },
  );
  filtered.passed.forEach((i, k) => {
    const v = withEvidence(result.verdicts[k]!, evidence[k]);
    const note = filtered.notes[i];
    const cap = filtered.caps[i];
    // A capped claim keeps its verdict: a large honest node looks the same as a liar, so the cap limits
    // influence without counting as evidence against the node (reputation moves on verdicts).
    const capped = cap
      ? `weight capped from ${share(cap.shareClaimed)} to ${share(v.weight)}: claimed ${count(cap.claimed)} examples, ` +
        `the round's median claim is ${count(cap.median)} (counted as ${count(cap.counted)}, max_examples_ratio ${cap.ratio}); `
      : '';
    verdicts[i] =
      note?.kind === 'clipped'
        ? { ...v, verdict: v.verdict === 'kept' ? 'down-weighted' : v.verdict, reason: `${note.reason}; ${capped}${v.reason}` }
        : cap
          ? { ...v, reason: `${capped}${v.reason}` }
          : v;
  });
  return { aggregate: result.aggregate, verdicts };
}

/**
 * reject_flagged: the rule again on the updates the evidence checks did not flag; the flagged get no
 * weight (withEvidence then rejects them). When too few would be left for the rule's precondition,
 * the first aggregate stands and says why.
 */
function withoutFlagged(
  spec: AggregationSpec,
  filtered: { readonly updates: readonly Float32Array[]; readonly examples: readonly number[] },
  first: AggregationResult,
  evidence: readonly (string | undefined)[],
  options: AggregateOptions,
): AggregationResult {
  const clean = evidence.flatMap((e, k) => (e === undefined ? [k] : []));
  if (clean.length === evidence.length) return first;
  const setAside = evidence.length - clean.length;
  const rule = ruleFor(spec);
  // The rule returns its own spec type; the registry only hands it specs of its own rule.
  const second = (rule.afterSettingAside?.(spec, setAside, clean.length) as AggregationSpec | undefined) ?? spec;
  const problem = clean.length === 0 ? 'every update was flagged' : precondition(second, clean.length);
  if (problem) {
    return { ...first, verdicts: first.verdicts.map((v) => ({ ...v, reason: `${v.reason}; reject_flagged not applied: ${problem}` })) };
  }
  const again = applyRule(
    second,
    clean.map((k) => filtered.updates[k]!),
    clean.map((k) => filtered.examples[k]!),
    options,
  );
  const adapted = changedFields(spec, second);
  const how = adapted ? ` (${adapted}: the ${setAside} set aside count among the Byzantine updates the rule tolerates)` : '';
  const verdicts = first.verdicts.map((v, k): Verdict => {
    const j = clean.indexOf(k);
    return j >= 0
      ? how
        ? { ...again.verdicts[j]!, reason: `${again.verdicts[j]!.reason}; second aggregation${how}` }
        : again.verdicts[j]!
      : { ...v, verdict: 'not-selected', weight: 0, reason: `left out of the second aggregation (reject_flagged)${how}; first: ${v.reason}` };
  });
  return { aggregate: again.aggregate, verdicts };
}

/** The fields the second aggregation changed, as 'f 4 → 0, m 15 → 12', or '' when none. */
function changedFields(before: AggregationSpec, after: AggregationSpec): string {
  const was = before as unknown as Record<string, unknown>;
  const now = after as unknown as Record<string, unknown>;
  return Object.keys(now)
    .filter((key) => now[key] !== was[key])
    .map((key) => `${key} ${String(was[key])} → ${String(now[key])}`)
    .join(', ');
}

/**
 * The rule's verdict with the evidence checks' finding: an update the rule left out and the checks
 * flagged is rejected; one the rule used keeps its share and carries the evidence. A rule's own
 * rejection is evidence (its reason) when the rule gave none.
 */
function withEvidence(v: Verdict, found: string | undefined): Verdict {
  const evidence = [v.evidence ?? (v.verdict === 'rejected' ? v.reason : undefined), found].filter((e) => e !== undefined).join('; ');
  if (!evidence) return v;
  const verdict = v.weight === 0 ? 'rejected' : v.verdict;
  return { ...v, verdict, evidence, reason: found === undefined ? v.reason : `${v.reason}; flagged: ${found}` };
}

/** A weight share, truncated (not rounded) to three decimals, so 0.99998 reads 0.999 and never 1. */
function share(x: number): string {
  return (Math.floor(x * 1000) / 1000).toFixed(3);
}

/** An example count: grouped digits while readable, else three significant digits (1.00e+9). */
function count(x: number): string {
  return Number.isInteger(x) && x < 1e7 ? x.toLocaleString('en-US') : x < 1e7 ? x.toFixed(1) : x.toPrecision(3);
}

function rejections(notes: readonly ({ kind: string; reason: string } | undefined)[]): string {
  const reasons = notes.flatMap((note, i) => (note?.kind === 'rejected' ? [`update ${i} ${note.reason}`] : []));
  return reasons.length <= 3 ? reasons.join('; ') : `${reasons.slice(0, 3).join('; ')}; …`;
}

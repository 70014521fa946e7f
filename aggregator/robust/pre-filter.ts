// The checks every aggregation rule runs first. In order: an update of the
// wrong length, one with a non-finite value, one whose example count the rule
// cannot use, one whose L2 norm exceeds max_norm, or one whose norm exceeds
// max_norm_ratio × the round's median norm is rejected; one whose norm exceeds
// clip_norm is scaled down to it (a copy: inputs are never modified) and marked
// down-weighted. Then, for rules that weight by example counts, a count above
// max_examples_ratio × the round's median count is counted as that cap: a
// node chooses the count it signs, so a claim must not buy influence.

import { z } from 'zod';
import { num } from './format.js';
import { squaredNorms } from './kernels/vectors.js';
import { sharedFloat32 } from './kernels/pool.js';
import { AggregationError } from './verdict.js';

/** The pre-filter's fields in every rule's `aggregation` section (rule.ts ruleSchema adds them). */
export const preFilterFields = {
  max_norm: z
    .number()
    .positive()
    .optional()
    .describe('pre-check: an update whose L2 norm exceeds this is rejected before aggregation'),
  clip_norm: z
    .number()
    .positive()
    .optional()
    .describe('pre-filter: an update whose L2 norm exceeds this is scaled down to it (down-weighted)'),
};

const normRatio = z
  .number()
  .gt(1)
  .nullable()
  .describe("pre-check: an update whose L2 norm exceeds this many times the round's median norm is rejected (null: no check)");

/** The relative norm check's field: off unless set, or on by default at `byDefault` (the mean's safe default). */
export function normRatioField(): z.ZodOptional<typeof normRatio>;
export function normRatioField(byDefault: number): z.ZodDefault<typeof normRatio>;
export function normRatioField(byDefault?: number) {
  return byDefault === undefined ? normRatio.optional() : normRatio.default(byDefault);
}

/**
 * The claim cap's field, in the sections of rules that weight by example counts: a node chooses the
 * count it signs, so no update's count counts above this many times the round's median count.
 */
export const examplesCapField = z
  .number()
  .min(1)
  .nullable()
  .default(2)
  .describe("an update's example count counts for at most this many times the round's median count (null: no cap)");

export interface PreFilterSpec {
  /** Reject an update whose L2 norm exceeds this. */
  readonly max_norm?: number | undefined;
  /** Scale an update whose L2 norm exceeds this down to it. */
  readonly clip_norm?: number | undefined;
  /** Reject an update whose L2 norm exceeds this many times the round's median norm (null or absent: no check). */
  readonly max_norm_ratio?: number | null | undefined;
  /** Weighted rules: count no update's examples above this many times the round's median count (null or absent: no cap). */
  readonly max_examples_ratio?: number | null | undefined;
}

export interface PreFilterOptions {
  /** The model's parameter count; without it, the length most updates have. */
  readonly length?: number | undefined;
  /** Whether the rule weights by example counts (then they must be positive numbers). */
  readonly weighted?: boolean | undefined;
}

/** An example count the claim cap lowered. */
export interface ClaimCap {
  /** The count the update came with (its node's signed claim, times its reputation when the experiment weights by it). */
  readonly claimed: number;
  /** The count it was aggregated with: max_examples_ratio × median. */
  readonly counted: number;
  /** The round's median count, over the updates that passed. */
  readonly median: number;
  readonly ratio: number;
  /** Its share of the passed updates' total count before the cap. */
  readonly shareClaimed: number;
}

export type PreFilterNote =
  | { readonly kind: 'rejected'; readonly reason: string }
  | { readonly kind: 'clipped'; readonly reason: string; readonly from: number; readonly to: number };

export interface PreFilterOutcome {
  /** Input indices of the updates that passed, in input order. */
  readonly passed: readonly number[];
  /** The updates that passed (clipped ones scaled down), aligned with `passed`. */
  readonly updates: readonly Float32Array[];
  /** Their example counts, aligned with `passed`. */
  readonly examples: readonly number[];
  /** Per input: why it was rejected, how it was clipped, or undefined when untouched. */
  readonly notes: readonly (PreFilterNote | undefined)[];
  /** Per input: its L2 norm (NaN when not computed: wrong length). */
  readonly norms: Float64Array;
  /** Per input: how the claim cap lowered its example count, or undefined. */
  readonly caps: readonly (ClaimCap | undefined)[];
  /** The length every passed update has. */
  readonly length: number;
}

export function preFilter(
  updates: readonly Float32Array[],
  examples: readonly number[],
  spec: PreFilterSpec,
  options: PreFilterOptions = {},
): PreFilterOutcome {
  const n = updates.length;
  if (examples.length !== n) throw new AggregationError(`${n} updates but ${examples.length} example counts`);
  for (const [name, value] of [
    ['max_norm', spec.max_norm],
    ['clip_norm', spec.clip_norm],
  ] as const) {
    if (value !== undefined && !(value > 0)) throw new AggregationError(`${name} must be positive; got ${value}`);
  }
  const normRatio = spec.max_norm_ratio ?? undefined;
  if (normRatio !== undefined && !(normRatio > 1)) throw new AggregationError(`max_norm_ratio must be above 1; got ${normRatio}`);
  const examplesRatio = options.weighted ? (spec.max_examples_ratio ?? undefined) : undefined;
  if (examplesRatio !== undefined && !(examplesRatio >= 1)) throw new AggregationError(`max_examples_ratio must be at least 1; got ${examplesRatio}`);
  const { length, described } = expectedLength(updates, options.length);
  const notes: (PreFilterNote | undefined)[] = new Array(n).fill(undefined);
  const norms = new Float64Array(n).fill(NaN);

  const sized: number[] = [];
  for (let i = 0; i < n; i++) {
    const u = updates[i]!;
    if (u.length !== length) notes[i] = { kind: 'rejected', reason: `has ${u.length} values; ${described}` };
    else sized.push(i);
  }
  const squares = squaredNorms(sized.map((i) => updates[i]!));
  sized.forEach((i, k) => (norms[i] = Math.sqrt(squares[k]!)));
  // The median over every update with a finite norm: one outlier (or a few, below half) cannot move it.
  const medianNorm = median(sized.map((i) => norms[i]!).filter(Number.isFinite));

  const passed: number[] = [];
  const kept: Float32Array[] = [];
  const keptExamples: number[] = [];
  for (const i of sized) {
    const u = updates[i]!;
    const norm = norms[i]!;
    const e = examples[i]!;
    if (!Number.isFinite(norm)) {
      notes[i] = { kind: 'rejected', reason: describeNonFinite(u) };
    } else if (options.weighted && !(e > 0 && Number.isFinite(e))) {
      notes[i] = { kind: 'rejected', reason: `reported ${e} examples; this rule weights by examples, which must be a positive number` };
    } else if (spec.max_norm !== undefined && norm > spec.max_norm) {
      notes[i] = { kind: 'rejected', reason: `L2 norm ${num(norm)} exceeds max_norm ${spec.max_norm}` };
    } else if (normRatio !== undefined && norm > normRatio * medianNorm) {
      notes[i] = {
        kind: 'rejected',
        reason: `L2 norm ${num(norm)} is ${num(norm / medianNorm)}× the round's median norm ${num(medianNorm)} (max_norm_ratio ${normRatio})`,
      };
    } else if (spec.clip_norm !== undefined && norm > spec.clip_norm) {
      const to = spec.clip_norm;
      notes[i] = { kind: 'clipped', reason: `clipped from ${num(norm)} to ${to}`, from: norm, to };
      passed.push(i);
      kept.push(scaled(u, to / norm));
      keptExamples.push(e);
    } else {
      passed.push(i);
      kept.push(u);
      keptExamples.push(e);
    }
  }
  const caps: (ClaimCap | undefined)[] = new Array(n).fill(undefined);
  if (examplesRatio !== undefined && keptExamples.length > 0) {
    const medianClaim = median(keptExamples);
    const total = keptExamples.reduce((a, b) => a + b, 0);
    const counted = examplesRatio * medianClaim;
    keptExamples.forEach((e, k) => {
      if (e <= counted) return;
      caps[passed[k]!] = { claimed: e, counted, median: medianClaim, ratio: examplesRatio, shareClaimed: e / total };
      keptExamples[k] = counted;
    });
  }
  return { passed, updates: kept, examples: keptExamples, notes, norms, caps, length };
}

/** The median of finite values (the mean of the middle two for an even count); NaN for none. */
function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function expectedLength(updates: readonly Float32Array[], given: number | undefined): { length: number; described: string } {
  if (given !== undefined) return { length: given, described: `the model has ${given}` };
  // The length most updates have; among equally common ones, the first seen.
  const counts = new Map<number, number>();
  for (const u of updates) counts.set(u.length, (counts.get(u.length) ?? 0) + 1);
  let best = -1;
  let bestCount = 0;
  for (const [len, count] of counts) {
    if (count > bestCount) {
      best = len;
      bestCount = count;
    }
  }
  return { length: best, described: `${bestCount} of this round's ${updates.length} updates have ${best}` };
}

function describeNonFinite(u: Float32Array): string {
  let count = 0;
  let first = -1;
  for (let j = 0; j < u.length; j++) {
    if (!Number.isFinite(u[j]!)) {
      if (first < 0) first = j;
      count++;
    }
  }
  if (count === 0) return 'its squared norm overflows';
  return `contains ${count} non-finite value${count === 1 ? '' : 's'} (${u[first]} at index ${first})`;
}

function scaled(u: Float32Array, factor: number): Float32Array {
  // Shared, like the received updates, so the round can still use the kernel pool.
  const out = sharedFloat32(u.length);
  for (let j = 0; j < u.length; j++) out[j] = u[j]! * factor;
  return out;
}

// The checks every aggregation rule runs first. In order: an update of the
// wrong length, one with a non-finite value, one whose example count the rule
// cannot use, or one whose L2 norm exceeds max_norm is rejected; one whose
// norm exceeds clip_norm is scaled down to it (a copy: inputs are never
// modified) and marked down-weighted.

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

export interface PreFilterSpec {
  /** Reject an update whose L2 norm exceeds this. */
  readonly max_norm?: number | undefined;
  /** Scale an update whose L2 norm exceeds this down to it. */
  readonly clip_norm?: number | undefined;
}

export interface PreFilterOptions {
  /** The model's parameter count; without it, the length most updates have. */
  readonly length?: number | undefined;
  /** Whether the rule weights by example counts (then they must be positive numbers). */
  readonly weighted?: boolean | undefined;
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
  return { passed, updates: kept, examples: keptExamples, notes, norms, length };
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

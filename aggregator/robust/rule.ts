// What a robust aggregation rule is to the rest of the aggregator: one
// descriptor per rule, kept beside the rule's code, listed in rules.ts.

import { z } from 'zod';
import { evidenceFields, type EvidenceSpec } from './evidence.js';
import { normRatioField, preFilterFields, type PreFilterSpec } from './pre-filter.js';
import type { AggregationResult } from './verdict.js';

export interface AggregateOptions {
  /** Where centered clipping starts (e.g. the previous aggregate); zeros when absent. */
  readonly center?: Float32Array;
  /** The model's parameter count: updates of another length are rejected. Without it, the length most updates have. */
  readonly length?: number;
}

/** What every rule's spec has: the rule's name, the pre-filter fields and the evidence checks' fields. */
export type RuleSpec = { readonly rule: string } & PreFilterSpec & EvidenceSpec;

/**
 * One robust aggregation rule. `Schema` is the zod object of its experiment
 * fields; the functions receive a spec that schema has parsed.
 *
 * The functions are declared as methods so that a rule over its own spec
 * type still counts as a RobustRule over any spec (the registry looks rules
 * up by `spec.rule`, so each only ever sees its own).
 */
export interface RobustRule<Schema extends z.ZodType<RuleSpec> = z.ZodType<RuleSpec>> {
  /** The `aggregation.rule` value that selects it; the literal its schema's `rule` field accepts. */
  readonly name: z.output<Schema>['rule'];
  /** Its `aggregation` section: `rule`, its own fields, then the pre-filter fields (ruleSchema builds it). */
  readonly schema: Schema;
  /** Whether it weights updates by their example counts (then the pre-filter rejects unusable counts). */
  readonly weighted: boolean;
  /** The fewest updates it accepts under this spec. */
  minUpdates(spec: z.output<Schema>): number;
  readonly precondition: {
    /** Its precondition on n, the number of updates that reach it, as docs state it (e.g. 'n ≥ 4f + 3'). */
    readonly text: string;
    /** Why it cannot aggregate n updates under this spec, or undefined when it can. */
    check(spec: z.output<Schema>, n: number): string | undefined;
  };
  /**
   * reject_flagged: its spec for the second aggregation, once `setAside` updates were left out on evidence.
   * Rules that tolerate f Byzantine updates count each one set aside as one of the f, so the second
   * aggregation asks for no more than the n − setAside updates left can give (Multi-Krum's m ≤ n − f).
   * Without it the spec stays as it is.
   */
  afterSettingAside?(spec: z.output<Schema>, setAside: number, left: number): z.output<Schema>;
  /** The aggregate of updates that passed the pre-filter and the precondition, with a verdict for each, in input order. */
  apply(spec: z.output<Schema>, updates: readonly Float32Array[], examples: readonly number[], options: AggregateOptions): AggregationResult;
}

/** The relative checks of a rule's section: the norm check (off by default) and, for weighted rules, the claim cap. */
export type RelativeChecks = { readonly max_norm_ratio: z.ZodType } & { readonly max_examples_ratio?: z.ZodType };

const UNWEIGHTED_CHECKS = { max_norm_ratio: normRatioField() };

/**
 * A rule's `aggregation` section: `rule` (the name), the rule's own fields, the pre-filter fields,
 * the evidence checks' fields (evidence.ts), then its relative checks: by default the relative norm check, off; a weighted rule passes the
 * claim cap (examplesCapField) too, and a rule with no robustness of its own a default for the norm check.
 */
export function ruleSchema<Name extends string, Fields extends z.ZodRawShape, Checks extends RelativeChecks = typeof UNWEIGHTED_CHECKS>(
  name: Name,
  fields: Fields,
  checks: Checks = UNWEIGHTED_CHECKS as unknown as Checks,
) {
  return z.object({ rule: z.literal(name), ...fields, ...preFilterFields, ...evidenceFields, ...checks }).strict();
}

/** The precondition of the rules that take any non-empty round. */
export function atLeastOneUpdate(rule: string, n: number): string | undefined {
  return n >= 1 ? undefined : `${rule} needs at least 1 update; this round has ${n}`;
}

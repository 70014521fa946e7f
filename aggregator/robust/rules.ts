// The registry of robust aggregation rules.
//
// To add a rule: write foo.ts exporting a RobustRule (rule.ts), add it to
// RULES here. The experiment schema, the pre-filter, the precondition checks
// and `aggregate` all find it through this list. A descriptor's fields:
//   name          the `aggregation.rule` value that selects it
//   schema        its `aggregation` section, built by ruleSchema(name, { its own fields })
//                 so that the pre-filter fields (max_norm, clip_norm) come with it
//   weighted      whether it weights updates by example counts (Byzantine nodes can lie
//                 about them, so most robust rules do not)
//   minUpdates    the fewest updates it accepts under a spec (strategies check the quorum)
//   precondition  text: its condition on n as docs state it; check(spec, n): why n updates
//                 cannot be aggregated, or undefined; minUpdates(spec) updates must pass
//                 and one fewer must not (rules.test.ts)
//   apply         the rule itself, on updates that passed the pre-filter and the precondition

import { z } from 'zod';
import { bulyanRule } from './bulyan.js';
import { centeredClippingRule } from './centered-clipping.js';
import { dncRule } from './dnc.js';
import { geometricMedianRule } from './geometric-median.js';
import { krumRule, multiKrumRule } from './krum.js';
import { meanRule } from './mean.js';
import { medianRule } from './median.js';
import type { RobustRule } from './rule.js';
import { trimmedMeanRule } from './trimmed-mean.js';

/** Every rule, in the order the experiment schema lists them. */
export const RULES = [
  meanRule,
  medianRule,
  trimmedMeanRule,
  krumRule,
  multiKrumRule,
  bulyanRule,
  geometricMedianRule,
  centeredClippingRule,
  dncRule,
] as const;

type SchemasOf<Rules extends readonly RobustRule[]> = { readonly [K in keyof Rules]: Rules[K]['schema'] };

/** The experiment's `aggregation` section: one rule's fields, chosen by `rule`. */
export const aggregationSchema = z.discriminatedUnion(
  'rule',
  // map keeps each schema at its rule's position; TypeScript only types the result as an array.
  RULES.map((r) => r.schema) as unknown as SchemasOf<typeof RULES>,
);
export type AggregationSpec = z.infer<typeof aggregationSchema>;
export type AggregationRule = AggregationSpec['rule'];

const byName = new Map<string, RobustRule>(RULES.map((r) => [r.name, r]));

/** The rule a spec names. */
export function ruleFor(spec: AggregationSpec): RobustRule {
  const rule = byName.get(spec.rule);
  if (rule === undefined) throw new RangeError(`unknown aggregation rule ${spec.rule}`);
  return rule;
}

// The registry of robust rules: every registered rule's schema takes a
// minimal spec, and each rule's minUpdates and precondition agree.
import test from 'ava';
import type { z } from 'zod';
import { minUpdates, precondition, PRECONDITIONS, WEIGHTED_RULES, type RobustRule } from './index.js';
import { aggregationSchema, ruleFor, RULES, type AggregationRule } from './rules.js';

type AggregationInput = z.input<typeof aggregationSchema>;

/**
 * Specs for each rule, the first the smallest its schema accepts; the others
 * sweep its parameters. Typed by rule, so a new rule does not compile here
 * until it has some.
 */
const SPECS: { readonly [R in AggregationRule]: readonly Extract<AggregationInput, { rule: R }>[] } = {
  mean: [{ rule: 'mean' }, { rule: 'mean', max_norm: 3, clip_norm: 1 }],
  median: [{ rule: 'median' }],
  'trimmed-mean': [0, 0.1, 0.25, 0.3, 0.45, 0.49].map((beta) => ({ rule: 'trimmed-mean', beta })),
  krum: [0, 1, 2, 3, 4, 10].map((f) => ({ rule: 'krum', f })),
  'multi-krum': [
    { rule: 'multi-krum', f: 0, m: 1 },
    { rule: 'multi-krum', f: 1, m: 1 },
    // m + f above 2f + 3: the bound that counts is m ≤ n − f.
    { rule: 'multi-krum', f: 1, m: 5 },
    { rule: 'multi-krum', f: 0, m: 7 },
    { rule: 'multi-krum', f: 2, m: 3 },
    { rule: 'multi-krum', f: 3, m: 10 },
  ],
  bulyan: [0, 1, 2, 3, 4, 10].map((f) => ({ rule: 'bulyan', f })),
  'geometric-median': [{ rule: 'geometric-median' }, { rule: 'geometric-median', max_iterations: 3 }],
  'centered-clipping': [{ rule: 'centered-clipping', tau: 1 }, { rule: 'centered-clipping', tau: 0.1, iterations: 10 }],
  dnc: [
    { rule: 'dnc', f: 0 },
    { rule: 'dnc', f: 1 },
    { rule: 'dnc', f: 4, niters: 1, b: 100, seed: 7 },
    // ⌊1.5 · 3⌋ = 4 flagged: n ≥ 5.
    { rule: 'dnc', f: 3, c: 1.5 },
    // ⌊0.29 · 100⌋ = 29, though 0.29 · 100 is 28.999999999999996 in floating point.
    { rule: 'dnc', f: 100, c: 0.29 },
  ],
};

test('every registered rule has its own name, and its schema parses a minimal spec into one the registry maps back to it', (t) => {
  t.deepEqual(
    RULES.map((r) => r.name),
    ['mean', 'median', 'trimmed-mean', 'krum', 'multi-krum', 'bulyan', 'geometric-median', 'centered-clipping', 'dnc'],
  );
  for (const rule of RULES) {
    const minimal = SPECS[rule.name][0]!;
    const own = rule.schema.safeParse(minimal);
    t.true(own.success, `${rule.name}: ${own.error?.message}`);
    const spec = aggregationSchema.parse(minimal);
    t.deepEqual(spec, own.data, rule.name);
    t.is(spec.rule, rule.name);
    t.is(ruleFor(spec), rule);
    // Its schema is its own: another rule's name is refused.
    t.false(rule.schema.safeParse({ ...minimal, rule: rule.name === 'mean' ? 'median' : 'mean' }).success, rule.name);
  }
});

test("each rule's minUpdates(spec) updates pass its precondition and one fewer do not", (t) => {
  for (const rule of RULES) {
    const descriptor: RobustRule = rule;
    for (const input of SPECS[rule.name]) {
      const spec = aggregationSchema.parse(input);
      const least = minUpdates(spec);
      const what = `${JSON.stringify(input)}: minUpdates ${least}`;
      t.true(Number.isInteger(least) && least >= 1, what);
      t.is(precondition(spec, least), undefined, what);
      t.is(typeof precondition(spec, least - 1), 'string', what);
      t.is(descriptor.precondition.check(spec, least - 1), precondition(spec, least - 1), what);
    }
  }
});

test('the tables derived from the registry say what they said when they were written by hand', (t) => {
  t.deepEqual(Object.entries(PRECONDITIONS), [
    ['mean', 'n ≥ 1'],
    ['median', 'n ≥ 1'],
    ['trimmed-mean', 'n − 2⌊βn⌋ ≥ 1'],
    ['krum', 'n > 2f + 2'],
    ['multi-krum', 'n > 2f + 2 and 1 ≤ m ≤ n − f'],
    ['bulyan', 'n ≥ 4f + 3'],
    ['geometric-median', 'n ≥ 1'],
    ['centered-clipping', 'n ≥ 1'],
    ['dnc', 'n > c·f'],
  ]);
  t.deepEqual([...WEIGHTED_RULES], ['mean', 'geometric-median']);
});

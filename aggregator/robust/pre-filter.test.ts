import test from 'ava';
import { aggregate, aggregationSchema } from './index.js';

const updates = (...rows: number[][]) => rows.map((r) => new Float32Array(r));
const honest = () => updates([1, 0], [0.9, 0.1], [1.1, -0.1], [1, 0.05]);

test("the mean as experiments get it by default caps a claim at twice the round's median and says so in the verdict", (t) => {
  const spec = aggregationSchema.parse({ rule: 'mean' });
  const { verdicts } = aggregate(spec, honest(), [6000, 6000, 6000, 1e9]);
  const liar = verdicts[3]!;
  // Kept, not down-weighted: an honest node with much data looks the same, so the cap is no evidence against it.
  t.is(liar.verdict, 'kept');
  // 12,000 of 30,000 counted examples: a share of 0.4, against 0.999 had the claim been believed.
  t.true(Math.abs(liar.weight - 0.4) < 1e-9, String(liar.weight));
  t.regex(liar.reason, /^weight capped from 0\.999 to 0\.400: claimed 1\.00e\+9 examples, the round's median claim is 6,000 \(counted as 12,000, max_examples_ratio 2\)/);
  for (const v of verdicts.slice(0, 3)) t.is(v.verdict, 'kept');
});

test('a claim within the cap, an unweighted rule, and a cap turned off leave weights as claimed', (t) => {
  const mean = aggregationSchema.parse({ rule: 'mean' });
  const within = aggregate(mean, honest(), [100, 150, 200, 250]);
  t.deepEqual(within.verdicts.map((v) => v.verdict), ['kept', 'kept', 'kept', 'kept']);
  t.true(Math.abs(within.verdicts[3]!.weight - 250 / 700) < 1e-9);
  const off = aggregate(aggregationSchema.parse({ rule: 'mean', max_examples_ratio: null }), honest(), [6000, 6000, 6000, 1e9]);
  t.true(off.verdicts[3]!.weight > 0.99);
  const median = aggregate(aggregationSchema.parse({ rule: 'median' }), honest(), [6000, 6000, 6000, 1e9]);
  t.false(median.verdicts.some((v) => /capped/.test(v.reason)));
});

test('geometric-median no longer follows an update whose claim is 10× the others', (t) => {
  const spec = aggregationSchema.parse({ rule: 'geometric-median' });
  const rows = updates([0, 0], [0.1, 0], [0, 0.1], [0.1, 0.1], [5, 5]);
  const { aggregate: agg, verdicts } = aggregate(spec, rows, [10, 10, 10, 10, 400]);
  t.true(Math.hypot(agg[0]! - 5, agg[1]! - 5) > 4, `aggregate ${[...agg]}`);
  t.regex(verdicts[4]!.reason, /weight capped/);
});

test("the mean by default rejects an update over 10× the round's median norm, naming the check; null turns the check off", (t) => {
  const rows = honest();
  rows[2] = rows[2]!.map((x) => x * 1e6);
  const { verdicts } = aggregate(aggregationSchema.parse({ rule: 'mean' }), rows, [10, 10, 10, 10]);
  t.is(verdicts[2]!.verdict, 'rejected');
  t.regex(verdicts[2]!.reason, /^L2 norm 1105000 is 1104000× the round's median norm 1\.001 \(max_norm_ratio 10\)$/);
  t.deepEqual(verdicts.filter((_, i) => i !== 2).map((v) => v.verdict), ['kept', 'kept', 'kept']);
  const off = aggregate(aggregationSchema.parse({ rule: 'mean', max_norm_ratio: null }), rows, [10, 10, 10, 10]);
  t.is(off.verdicts[2]!.verdict, 'kept');
  // Other rules have robustness of their own: the check is off unless their section sets it.
  t.is(aggregate(aggregationSchema.parse({ rule: 'geometric-median' }), rows, [10, 10, 10, 10]).verdicts.filter((v) => /max_norm_ratio/.test(v.reason)).length, 0);
  t.is(aggregate(aggregationSchema.parse({ rule: 'median', max_norm_ratio: 3 }), rows, [10, 10, 10, 10]).verdicts[2]!.verdict, 'rejected');
});

test('an experiment that omits its aggregation section gets the mean with both safe defaults', async (t) => {
  const { tinyExperiment } = await import('../../test/support/fixtures.js');
  t.like(tinyExperiment().aggregation, { rule: 'mean', max_norm_ratio: 10, max_examples_ratio: 2 });
});

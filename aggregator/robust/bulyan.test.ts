import test from 'ava';
import { bulyan } from './bulyan.js';
import { aggregate, aggregationSchema } from './index.js';

// Six honest updates close together and one Byzantine far away, at every position: with f = 1,
// Bulyan's iterated Krum reaches three remaining members, where scoring with no neighbour would
// make every score 0 and pick the lowest index.
function round(byzantineAt: number): Float32Array[] {
  const honest = [0.9, 1, 1.1, 0.95, 1.05, 1.02];
  const updates = honest.map((v, i) => new Float32Array([v, v + 0.01 * i, v - 0.01 * i]));
  updates.splice(byzantineAt, 0, new Float32Array([50, -50, 50]));
  return updates;
}

for (const at of [0, 3, 6]) {
  test(`Bulyan at f = 1 leaves out the Byzantine update at index ${at}, and the evidence checks reject it`, (t) => {
    const alone = bulyan(round(at), 1);
    t.is(alone.verdicts[at]!.verdict, 'not-selected', alone.verdicts[at]!.reason);
    for (const x of alone.aggregate) t.true(Math.abs(x - 1) < 0.2, `aggregate ${[...alone.aggregate]}`);
    const checked = aggregate(aggregationSchema.parse({ rule: 'bulyan', f: 1 }), round(at), round(at).map(() => 1));
    t.is(checked.verdicts[at]!.verdict, 'rejected');
    t.regex(checked.verdicts[at]!.evidence ?? '', /its distance to the aggregate, .* is .*× the round's median distance/);
    t.deepEqual(Array.from(checked.aggregate), Array.from(alone.aggregate), 'evidence never changes the aggregate');
    t.is(checked.verdicts.filter((v) => v.evidence !== undefined).length, 1, 'no honest update is flagged');
  });
}

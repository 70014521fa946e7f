import test from 'ava';
import { chooseByzantine, detection } from './byzantine-node.js';

test('Byzantine nodes are chosen by the seed, round(fraction × nodes) of them', (t) => {
  const a = chooseByzantine(20, 0.2, 7);
  t.is(a.length, 4);
  t.deepEqual(a, chooseByzantine(20, 0.2, 7));
  t.notDeepEqual(a, chooseByzantine(20, 0.2, 8));
  t.true(a.every((i) => i >= 0 && i < 20));
  t.is(new Set(a).size, 4);
  t.deepEqual(chooseByzantine(20, 0, 7), []);
  t.is(chooseByzantine(20, 0.3, 7).length, 6);
});

test('detection counts verdicts on Byzantine and honest updates separately, and evidence as flagged', (t) => {
  const d = detection(
    [
      { nodeId: 'b', verdict: 'rejected', evidence: 'identical to 3 other updates' },
      { nodeId: 'b', verdict: 'down-weighted', evidence: null },
      { nodeId: 'b', verdict: 'kept', evidence: 'identical to 3 other updates' },
      { nodeId: 'h', verdict: 'kept', evidence: null },
      { nodeId: 'h', verdict: 'not-selected', evidence: null },
      { nodeId: 'h', verdict: 'rejected', evidence: 'L2 norm 50 exceeds max_norm 20' },
    ],
    new Set(['b']),
  );
  t.deepEqual(d, {
    byzantine: { updates: 3, rejected: 1, down_weighted: 1, not_selected: 0, flagged: 2 },
    honest: { updates: 3, rejected: 1, down_weighted: 0, not_selected: 1, flagged: 1 },
  });
});

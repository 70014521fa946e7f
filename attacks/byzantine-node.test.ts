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

test('detection counts verdicts on Byzantine and honest updates separately', (t) => {
  const d = detection(
    [
      { nodeId: 'b', verdict: 'rejected' },
      { nodeId: 'b', verdict: 'down-weighted' },
      { nodeId: 'h', verdict: 'kept' },
      { nodeId: 'h', verdict: 'rejected' },
    ],
    new Set(['b']),
  );
  t.deepEqual(d, { byzantine: { updates: 2, rejected: 1, down_weighted: 1 }, honest: { updates: 2, rejected: 1, down_weighted: 0 } });
});

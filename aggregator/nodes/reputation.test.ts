import test from 'ava';
import { parseExperiment } from '../experiment/schema.js';
import { nextReputation, reputationChanges, selectable } from './reputation.js';
import { reasonKind, summarizeVerdicts } from '../rounds/verdict-summary.js';
import { tinyExperiment } from '../../test/support/fixtures.js';

const spec = (o: object = {}) => tinyExperiment({ reputation: { decay: 0.5, ...o } }).reputation;

test('reputation is a moving average of 0 for evidence and 1 for none', (t) => {
  t.is(nextReputation(1, true, 0.5), 0.5);
  t.is(nextReputation(0.5, false, 0.5), 0.75);
  t.is(nextReputation(0.2, false, 1), 1);
  t.is(nextReputation(0.2, true, 1), 0);
});

test('reputation changes apply a round of verdicts and ban past the threshold only after enough verdicts', (t) => {
  const standing = new Map([
    ['a', { reputation: 0.5, verdicts: 1 }],
    ['b', { reputation: 0.5, verdicts: 0 }],
  ]);
  const changes = reputationChanges(spec({ ban_below: 0.3, ban_after: 2 }), (id) => standing.get(id) ?? { reputation: 1, verdicts: 0 }, [
    { nodeId: 'a', evidence: true },
    { nodeId: 'b', evidence: true },
    { nodeId: 'c', evidence: false },
  ]);
  t.deepEqual(changes, [
    { nodeId: 'a', reputation: 0.25, verdicts: 2, ban: 'reputation 0.250 fell below 0.3 after 2 verdicts' },
    { nodeId: 'b', reputation: 0.25, verdicts: 1 },
    { nodeId: 'c', reputation: 1, verdicts: 1 },
  ]);
  t.false(reputationChanges(spec(), () => ({ reputation: 0, verdicts: 99 }), [{ nodeId: 'x', evidence: true }])[0]!.ban !== undefined);
});

test('selection by reputation', (t) => {
  t.true(selectable(spec(), 0));
  t.false(selectable(spec({ min_for_selection: 0.4 }), 0.39));
  t.true(selectable(spec({ min_for_selection: 0.4 }), 0.4));
});

test('the experiment schema refuses reputation thresholds outside [0, 1]', (t) => {
  t.throws(() => tinyExperiment({ reputation: { decay: 0, ban_after: 1 } }), { message: /reputation\.decay/ });
  t.throws(() => tinyExperiment({ reputation: { decay: 0.3, ban_below: 2 } }), { message: /reputation\.ban_below/ });
  t.throws(() => parseExperiment({ ...tinyExperiment(), aggregation: { rule: 'krum' } }), { message: /aggregation\.f/ });
});

test('a round summary says how many updates each rule rejected and why', (t) => {
  t.is(summarizeVerdicts([{ verdict: 'kept', weight: 1, reason: 'x' }]), 'all 1 kept');
  t.is(
    summarizeVerdicts([
      { verdict: 'rejected', weight: 0, reason: 'krum score 12.5, not among the 1 selected' },
      { verdict: 'rejected', weight: 0, reason: 'krum score 99, not among the 1 selected' },
      { verdict: 'rejected', weight: 0, reason: 'norm 1e3 exceeds max_norm 20' },
      { verdict: 'down-weighted', weight: 0.1, reason: 'clipped from 12.3 to 5' },
      { verdict: 'kept', weight: 0.9, reason: 'krum score 1.0, selected' },
    ]),
    '3 of 5 rejected (2 krum score, 1 norm), 1 down-weighted (clipped)',
  );
  t.is(reasonKind('trimmed in 96% of coordinates'), 'trimmed');
});

import test from 'ava';
import { divergedTraining, EXPLODED_LOSS_FACTOR } from './update-checks.js';

test('a non-finite final loss is refused, and the reason says to check the data scale', (t) => {
  for (const loss of [Number.NaN, Number.POSITIVE_INFINITY]) {
    t.regex(divergedTraining({ start_loss: 2.3, loss }, 10) ?? '', /diverged: the final loss is (NaN|Infinity).*scaled/);
  }
});

test('a loss that exploded past its start and past a uniform guess is refused', (t) => {
  t.regex(divergedTraining({ start_loss: 2.3, loss: 1e27 }, 10) ?? '', /rose from 2\.30 to 1\.00e\+27/);
  t.truthy(divergedTraining({ start_loss: 0.2, loss: EXPLODED_LOSS_FACTOR * 0.2 + 2.31 }, 10));
});

test('honest training passes: falling loss, a loss a little worse on skewed data, a rise that stays below guessing', (t) => {
  t.is(divergedTraining({ start_loss: 2.3, loss: 0.4 }, 10), undefined);
  t.is(divergedTraining({ start_loss: 0.3, loss: 0.6 }, 10), undefined);
  // 20× its start but still better than a uniform guess over 10 classes (ln 10 ≈ 2.30).
  t.is(divergedTraining({ start_loss: 0.1, loss: 2 }, 10), undefined);
  // No batch ran: nothing to judge here (the node declines such a task as too slow).
  t.is(divergedTraining({ start_loss: Number.NaN, loss: 1 }, 10), undefined);
});

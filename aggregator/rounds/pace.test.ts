// Pace steering and the node's decision to decline, as pure functions.
import test from 'ava';
import { HelloPacer, pollRetryAfterMs } from './pace.js';
import { tooSlowForDeadline } from '../../trainer/task-check.js';

const policy = { hellosPerSecond: 10, pollsPerSecond: 100, minRetryMs: 1000, maxRetryMs: 10_000 };
const middle = () => 0.5; // jitter factor exactly 1

test('idle nodes are told to come back later as the population grows, within [min, max]', (t) => {
  t.is(pollRetryAfterMs(10, 20_000, policy, middle), 1000, 'a small population polls at the minimum');
  // 3,000 idle nodes at 100 polls/s need 30 s per cycle: 20 s of long poll plus 10 s of retry.
  t.is(pollRetryAfterMs(3000, 20_000, policy, middle), 10_000);
  t.is(pollRetryAfterMs(2500, 20_000, policy, middle), 5000);
  t.is(pollRetryAfterMs(1_000_000, 20_000, policy, () => 0.999), 10_000, 'never past the maximum, jitter included');
  t.is(pollRetryAfterMs(10, 20_000, policy, () => 0), 500, 'jitter spreads down to half');
});

test('the Hello pacer admits a burst up to its rate, then spreads the rest over the backlog', (t) => {
  let now = 0;
  const pacer = new HelloPacer(policy, () => now, middle);
  const waits = Array.from({ length: 30 }, () => pacer.admit());
  t.deepEqual(waits.slice(0, 10), Array(10).fill(0), 'a full bucket admits 10 at once');
  const refused = waits.slice(10);
  t.true(refused.every((w) => w >= 1000 && w <= 10_000));
  t.true(refused.at(-1)! > refused[0]!, 'later arrivals of the wave are told to wait longer');
  now += 1000;
  t.is(pacer.admit(), 0, 'a second later the bucket has refilled');
});

test('a node declines only when it could not train the minimum share of an epoch before the deadline', (t) => {
  const base = { now: 0, localExamples: 1000, minEpochFraction: 0.25 };
  t.is(tooSlowForDeadline({ ...base, trainUntil: 10, examplesPerSecond: undefined }), undefined, 'unknown speed: try');
  t.is(tooSlowForDeadline({ ...base, trainUntil: 2500, examplesPerSecond: 100 }), undefined, '250 examples take exactly 2.5 s');
  const reason = tooSlowForDeadline({ ...base, trainUntil: 2000, examplesPerSecond: 100 });
  t.regex(reason ?? '', /too slow for the deadline: 2\.0 s left, and 25% of an epoch \(250 examples\) takes ~2\.5 s at this node's 100 examples\/s/);
  t.regex(tooSlowForDeadline({ ...base, trainUntil: -5000, examplesPerSecond: 1e6 }) ?? '', /0\.0 s left/, 'past the deadline');
});

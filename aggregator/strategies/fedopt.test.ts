import test from 'ava';
import { weightedMean } from '../robust/mean.js';
import { fedavgStrategy } from './fedavg.js';
import { EVIDENCE_OFF } from '../robust/evidence.js';

test('weightedMean weights each update by its examples and explains every verdict', (t) => {
  const a = Float32Array.from([1, 0, -2]);
  const b = Float32Array.from([3, 4, 2]);
  const { aggregate, verdicts } = weightedMean([a, b], [1, 3]);
  t.deepEqual(Array.from(aggregate), [2.5, 3, 1]);
  t.deepEqual(
    verdicts.map((v) => [v.verdict, v.weight]),
    [
      ['kept', 0.25],
      ['kept', 0.75],
    ],
  );
  t.true(verdicts.every((v) => v.reason.length > 0));
});

test('weightedMean refuses empty input, ragged updates and non-positive weights', (t) => {
  t.throws(() => weightedMean([], []), { message: /no updates/ });
  t.throws(() => weightedMean([new Float32Array(2), new Float32Array(3)], [1, 1]), { message: /update 1 has 3 values/ });
  t.throws(() => weightedMean([new Float32Array(2)], [0]), { message: /weight 0 is 0/ });
  t.throws(() => weightedMean([new Float32Array(2)], [1, 2]), { message: /1 updates but 2 weights/ });
});

test('FedAvg adds the weighted mean delta to the global model', (t) => {
  const strategy = fedavgStrategy.create({ name: 'fedavg' }, { training: { epochs: 1, batch_size: 10, learning_rate: 0.1 } });
  const global = Float32Array.from([10, 20]);
  const step = strategy.aggregate(global, [
    { nodeId: 'a', taskId: '1', numExamples: 100, reputation: 1, delta: Float32Array.from([1, -1]) },
    { nodeId: 'b', taskId: '2', numExamples: 300, reputation: 1, delta: Float32Array.from([-1, 3]) },
  ], {});
  t.deepEqual(Array.from(step.weights), [9.5, 22]);
  t.is(step.verdicts.length, 2);
  t.deepEqual(Array.from(global), [10, 20], 'the previous global model is not modified');
});

test('FedAvg weights by examples × reputation when the experiment asks for it, and runs the configured robust rule', (t) => {
  const training = { epochs: 1, batch_size: 10, learning_rate: 0.1 };
  const global = Float32Array.from([0, 0]);
  const ups = [
    { nodeId: 'a', taskId: '1', numExamples: 100, reputation: 1, delta: Float32Array.from([1, 1]) },
    { nodeId: 'b', taskId: '2', numExamples: 100, reputation: 0.25, delta: Float32Array.from([-1, 3]) },
  ];
  // (1·1 + 0.25·(−1)) / 1.25 = 0.6; (1·1 + 0.25·3) / 1.25 = 1.4
  const weighted = fedavgStrategy.create({ name: 'fedavg' }, { training, aggregation: { rule: 'mean', ...EVIDENCE_OFF, max_norm_ratio: null, max_examples_ratio: null }, reputation: { weight_updates: true } }).aggregate(global, ups, {});
  t.deepEqual(Array.from(weighted.weights).map((x) => +x.toFixed(6)), [0.6, 1.4]);
  const plain = fedavgStrategy.create({ name: 'fedavg' }, { training, aggregation: { rule: 'mean', ...EVIDENCE_OFF, max_norm_ratio: null, max_examples_ratio: null }, reputation: { weight_updates: false } }).aggregate(global, ups, {});
  t.deepEqual(Array.from(plain.weights), [0, 2]);
  // The median of three: the outlier moves nothing.
  const median = fedavgStrategy.create({ name: 'fedavg' }, { training, aggregation: { rule: 'median', ...EVIDENCE_OFF } }).aggregate(global, [
    ...ups,
    { nodeId: 'c', taskId: '3', numExamples: 100, reputation: 1, delta: Float32Array.from([1000, -1000]) },
  ], {});
  t.deepEqual(Array.from(median.weights), [1, 1]);
});

test('centered clipping starts from the last global step, which comes in the history, not from state kept between calls', (t) => {
  const strategy = fedavgStrategy.create(
    { name: 'fedavg' },
    { training: { epochs: 1, batch_size: 10, learning_rate: 0.1 }, aggregation: { rule: 'centered-clipping', ...EVIDENCE_OFF, tau: 1, iterations: 1 } },
  );
  const global = Float32Array.from([10, 10]);
  const ups = [{ nodeId: 'a', taskId: '1', numExamples: 1, reputation: 1, delta: Float32Array.from([10, 0]) }];
  // From a zero centre one iteration moves τ = 1 towards the update; from the last step (3, 0) it gets to 4.
  t.deepEqual(Array.from(strategy.aggregate(global, ups, {}).weights), [11, 10]);
  const withHistory = strategy.aggregate(global, ups, { previousGlobal: Float32Array.from([7, 10]) });
  t.deepEqual(Array.from(withHistory.weights), [14, 10]);
  t.deepEqual(Array.from(strategy.aggregate(global, ups, { previousGlobal: Float32Array.from([7, 10]) }).weights), [14, 10], 'same inputs, same result');
});

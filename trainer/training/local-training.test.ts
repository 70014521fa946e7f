import test from 'ava';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../core/backend.js';
import { evaluate } from '../../core/model/evaluate.js';
import { initialWeights } from '../../core/model/build.js';
import { modelSpec } from '../../core/model/zoo.js';
import { trainLocally, type TrainingProgress } from './local-training.js';
import { blockImages, gaussianBlobs, sameBits } from '../../test/support/training-data.js';

test.before(async () => {
  await initBackend('wasm', { log: () => {} });
});

const blobs = gaussianBlobs(400, 60, 1);
const logreg = modelSpec('logreg', { featureShape: blobs.featureShape, numClasses: 2 });
const images = blockImages(384, 2);
const twoNN = modelSpec('2nn', { featureShape: images.featureShape, numClasses: 2 });

// Serial tests run first and alone, so the global tensor count is not disturbed by other tests.
test.serial('training leaves no tensors behind, and memory stays flat while it runs', async (t) => {
  const base = initialWeights(twoNN, 1);
  const options = { spec: twoNN, baseWeights: base, data: images, epochs: 2, batchSize: 32, learningRate: 0.1, seed: 1 };
  await trainLocally(options); // builds and pools the model
  const before = tf.memory().numTensors;
  const during: number[] = [];
  await trainLocally({ ...options, onProgress: () => during.push(tf.memory().numTensors) });
  t.is(tf.memory().numTensors, before);
  // Per batch the live set is the weights (the model's, or the dense step's) and two running sums: constant.
  t.is(Math.max(...during) - Math.min(...during), 0, `live tensors during training ranged ${Math.min(...during)}..${Math.max(...during)}`);
});

test('logistic regression separates two Gaussian blobs', async (t) => {
  const base = initialWeights(logreg, 3);
  const before = await evaluate(logreg, base, blobs);
  const result = await trainLocally({ spec: logreg, baseWeights: base, data: blobs, epochs: 5, batchSize: 16, learningRate: 0.1, seed: 4 });
  const after = await evaluate(logreg, result.weights, blobs);
  t.true(after.loss < before.loss / 2, `loss ${before.loss} → ${after.loss}`);
  t.true(after.accuracy > 0.9, `accuracy ${before.accuracy} → ${after.accuracy}`);
  t.is(result.examplesTrained, 5 * 400);
  t.is(result.epochsCompleted, 5);
  t.false(result.partial);
  // The training metrics describe the last epoch, close to (and, mid-epoch weights being older, a bit worse than) the final evaluation.
  t.true(result.metrics.accuracy > 0.85);
  t.true(Math.abs(result.metrics.loss - after.loss) < 0.2, `train loss ${result.metrics.loss} vs eval ${after.loss}`);
  t.true(result.metrics.seconds > 0);
  t.true(result.metrics.examples_per_second > 0);
  // The caller's weights are not modified in place.
  t.true(sameBits(base, initialWeights(logreg, 3)));
});

test('a 2NN learns a label that lives in one pixel block', async (t) => {
  const base = initialWeights(twoNN, 5);
  const before = await evaluate(twoNN, base, images);
  const result = await trainLocally({ spec: twoNN, baseWeights: base, data: images, epochs: 4, batchSize: 32, learningRate: 0.1, seed: 6 });
  const after = await evaluate(twoNN, result.weights, images);
  t.true(after.loss < before.loss / 2, `loss ${before.loss} → ${after.loss}`);
  t.true(after.accuracy > 0.95, `accuracy ${before.accuracy} → ${after.accuracy}`);
});

test('the same seed gives the same bits; another seed another order and other weights', async (t) => {
  const base = initialWeights(twoNN, 8);
  // 100 examples in batches of 32: the partial last batch (4 examples) is trained too.
  const data = { ...images, numExamples: 100, features: images.features.subarray(0, 100 * 784), labels: images.labels.subarray(0, 100) };
  const options = { spec: twoNN, baseWeights: base, data, epochs: 2, batchSize: 32, learningRate: 0.1, seed: 9 };
  const a = await trainLocally(options);
  const b = await trainLocally(options);
  const c = await trainLocally({ ...options, seed: 10 });
  t.true(sameBits(a.weights, b.weights));
  t.is(a.metrics.loss, b.metrics.loss);
  t.is(a.metrics.accuracy, b.metrics.accuracy);
  t.false(sameBits(a.weights, c.weights));
  t.is(a.examplesTrained, 200);
});

test('progress is reported per batch, partial batches included', async (t) => {
  const seen: TrainingProgress[] = [];
  const data = { ...blobs, numExamples: 50, features: blobs.features.subarray(0, 50 * 60), labels: blobs.labels.subarray(0, 50) };
  await trainLocally({
    spec: logreg,
    baseWeights: initialWeights(logreg, 1),
    data,
    epochs: 2,
    batchSize: 16,
    learningRate: 0.1,
    seed: 1,
    onProgress: (p) => seen.push(p),
  });
  t.is(seen.length, 8);
  t.deepEqual(seen[3], { epoch: 0, batch: 4, batches: 4, examplesSeen: 50 });
  t.deepEqual(seen[7], { epoch: 1, batch: 4, batches: 4, examplesSeen: 100 });
});

test('a deadline stops training early and reports the partial work', async (t) => {
  const base = initialWeights(twoNN, 2);
  // About 10 s of work on wasm; the deadline allows a fraction of it.
  const options = { spec: twoNN, baseWeights: base, data: images, epochs: 100, batchSize: 32, learningRate: 0.05, seed: 2 };
  const started = Date.now();
  const result = await trainLocally({ ...options, deadline: started + 400 });
  const elapsed = Date.now() - started;
  t.true(result.partial);
  t.true(result.examplesTrained > 0 && result.examplesTrained < 100 * images.numExamples, `${result.examplesTrained} examples`);
  t.true(result.epochsCompleted < 100);
  t.true(Number.isFinite(result.metrics.loss) && Number.isFinite(result.metrics.accuracy));
  t.false(sameBits(result.weights, base));
  // It stops at the first batch boundary past the deadline, plus reading out the weights.
  t.true(elapsed < 2000, `took ${elapsed} ms`);

  const late = await trainLocally({ ...options, deadline: Date.now() - 1 });
  t.true(late.partial);
  t.is(late.examplesTrained, 0);
  t.is(late.epochsCompleted, 0);
  t.true(sameBits(late.weights, base));
  t.true(Number.isNaN(late.metrics.loss));
});

test('shouldStop ends training between batches', async (t) => {
  let batches = 0;
  const result = await trainLocally({
    spec: logreg,
    baseWeights: initialWeights(logreg, 1),
    data: blobs,
    epochs: 3,
    batchSize: 20,
    learningRate: 0.1,
    seed: 1,
    onProgress: () => batches++,
    shouldStop: () => batches >= 23,
  });
  t.true(result.partial);
  t.is(result.examplesTrained, 23 * 20);
  t.is(result.epochsCompleted, 1);
  // Metrics come from the 3 batches of the cut-short epoch.
  t.true(Number.isFinite(result.metrics.loss));
});

test('training yields to the event loop so timers keep firing', async (t) => {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 10);
  try {
    const result = await trainLocally({
      spec: twoNN,
      baseWeights: initialWeights(twoNN, 3),
      data: images,
      // The dense fast path finishes 2 epochs in ~0.2 s; 10 give the timer room to show yielding.
      epochs: 10,
      batchSize: 32,
      learningRate: 0.1,
      seed: 3,
    });
    // A loop that never yields lets no timer fire until it ends (at most one tick); several ticks
    // prove it yields. A rate would depend on how loaded the machine is, so none is asserted.
    t.true(result.metrics.seconds > 0.1, `training took only ${result.metrics.seconds} s`);
    t.true(ticks >= 3, `${ticks} ticks in ${result.metrics.seconds} s`);
  } finally {
    clearInterval(timer);
  }
});

test('mismatched data is refused before any work', async (t) => {
  const base = initialWeights(logreg, 1);
  await t.throwsAsync(
    trainLocally({ spec: twoNN, baseWeights: base, data: blobs, epochs: 1, batchSize: 8, learningRate: 0.1, seed: 1 }),
    { instanceOf: RangeError, message: /shape \[28, 28, 1\].*\[60\]/ },
  );
  await t.throwsAsync(
    trainLocally({ spec: logreg, baseWeights: new Float32Array(3), data: blobs, epochs: 1, batchSize: 8, learningRate: 0.1, seed: 1 }),
    { instanceOf: RangeError, message: /parameters/ },
  );
});

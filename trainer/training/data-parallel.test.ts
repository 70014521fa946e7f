// Data-parallel local training (trainer/training/data-parallel.ts): real worker threads
// on the wasm backend, against training on one thread. Serial: the backend is
// process-wide.
import test from 'ava';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../core/backend.js';
import { initialWeights } from '../../core/model/build.js';
import { modelSpec } from '../../core/model/zoo.js';
import { Rng } from '../../core/rng.js';
import type { Dataset } from '../../core/dataset.js';
import { DataParallel } from './data-parallel.js';
import { trainingThreads, trainLocally, type TrainLocallyOptions } from './local-training.js';
import type { Replica, ReplicaSetup } from './replicas.js';
import { sameBits } from '../../test/support/training-data.js';

test.before(async () => {
  await initBackend('wasm', { log: () => {} });
});

/** Learnable data: each class's images are a fixed random pattern plus noise. */
function patternData(n: number, seed: number): Dataset {
  const rng = new Rng(seed);
  const size = 28 * 28;
  const patterns = Array.from({ length: 10 }, () => Float32Array.from({ length: size }, () => rng.uniform()));
  const features = new Float32Array(n * size);
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const label = rng.int(10);
    labels[i] = label;
    for (let j = 0; j < size; j++) features[i * size + j] = 0.7 * patterns[label]![j]! + 0.3 * rng.uniform();
  }
  return { name: 'patterns', featureShape: [28, 28, 1], numClasses: 10, numExamples: n, features, labels };
}

const data = patternData(600, 3);
const twoNN = modelSpec('2nn', { featureShape: [28, 28, 1], numClasses: 10 });
const cnn = modelSpec('cnn', { featureShape: [28, 28, 1], numClasses: 10 });

function options(over: Partial<TrainLocallyOptions>): TrainLocallyOptions {
  return { spec: twoNN, baseWeights: initialWeights(twoNN, 7), data, epochs: 1, batchSize: 150, learningRate: 0.05, seed: 11, ...over };
}

function maxRelativeDifference(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return diff / scale;
}

test.serial('a batch split across two threads trains to the weights one thread reaches, up to float rounding, on both training paths', async (t) => {
  for (const path of ['dense', 'generic'] as const) {
    const one = await trainLocally(options({ path, threads: 1 }));
    const two = await trainLocally(options({ path, threads: 2 }));
    t.is(one.threads, 1);
    t.is(two.threads, 2, `${path}: two threads were allowed and the batch is large enough`);
    t.is(two.path, path);
    t.is(two.examplesTrained, 600);
    const moved = maxRelativeDifference(two.weights, options({}).baseWeights);
    const apart = maxRelativeDifference(two.weights, one.weights);
    t.true(moved > 1e-2, `${path}: training moved the weights (${moved})`);
    t.true(apart < 1e-4, `${path}: two threads ended ${apart} (relative) from one thread`);
    t.true(Math.abs(two.metrics.loss - one.metrics.loss) < 1e-4, `${path}: loss ${two.metrics.loss} vs ${one.metrics.loss}`);
    t.is(two.metrics.accuracy, one.metrics.accuracy);
  }
});

test.serial('two-thread runs with the same seed give the same bits; FedProx and an uneven last batch included', async (t) => {
  // 600 examples in batches of 160: the last has 120, split 60/60; μ > 0 pulls every replica toward the same start.
  const o = options({ threads: 2, batchSize: 160, proximalMu: 0.1, epochs: 2 });
  const a = await trainLocally(o);
  const b = await trainLocally(o);
  t.is(a.threads, 2);
  t.true(sameBits(a.weights, b.weights));
  const single = await trainLocally({ ...o, threads: 1 });
  t.true(maxRelativeDifference(a.weights, single.weights) < 1e-4);
});

test.serial('three threads (two workers) on two cores train to the same weights as one', async (t) => {
  const o = options({ batchSize: 300, threads: 3 });
  const three = await trainLocally(o);
  t.is(three.threads, 3);
  const one = await trainLocally({ ...o, threads: 1 });
  t.true(maxRelativeDifference(three.weights, one.weights) < 1e-4);
  t.true(sameBits(three.weights, (await trainLocally(o)).weights));
});

test.serial('threads are used only where a share of the batch outweighs the exchange of a step', (t) => {
  const at = (spec: typeof twoNN, batchSize: number, threads: number) => trainingThreads({ spec, batchSize, threads, data });
  t.is(at(twoNN, 32, 2), 1);
  t.is(at(twoNN, 64, 2), 1);
  t.is(at(twoNN, 128, 2), 2);
  t.is(at(twoNN, 128, 4), 2, 'four threads would leave 32 examples each');
  t.is(at(cnn, 10, 2), 1);
  t.is(at(cnn, 16, 2), 2);
  t.is(at(cnn, 64, 1), 1);
  // A batch larger than the data is the data.
  t.is(trainingThreads({ spec: twoNN, batchSize: 1000, threads: 2, data: { ...data, numExamples: 100 } }), 1);
});

test.serial('the CNN trains on two threads (autodiff path, Conv2D gradients in each worker)', async (t) => {
  const small = patternData(48, 5);
  const o: TrainLocallyOptions = { spec: cnn, baseWeights: initialWeights(cnn, 1), data: small, epochs: 1, batchSize: 24, learningRate: 0.05, seed: 2, threads: 2 };
  const two = await trainLocally(o);
  t.is(two.threads, 2);
  t.is(two.path, 'generic');
  const one = await trainLocally({ ...o, threads: 1 });
  t.true(maxRelativeDifference(two.weights, one.weights) < 1e-3, `CNN two threads vs one: ${maxRelativeDifference(two.weights, one.weights)}`);
  // The pooled model now exists; another two-thread run must leave no tensor behind on this thread.
  const before = tf.memory().numTensors;
  await trainLocally(o);
  t.is(tf.memory().numTensors, before);
});

test.serial('a worker that cannot build its replica fails the start with its reason, and a later run still works', async (t) => {
  // The CNN is not a Dense stack, so a worker told to take the Dense step refuses.
  const setup: ReplicaSetup = { spec: cnn, path: 'dense', featureShape: [28, 28, 1], classes: 10, learningRate: 0.1, proximalMu: 0 };
  const thisThread: Replica = { contributionSize: 4, contribute: () => ({ loss: 0, correct: 0 }), apply: () => {} };
  const err = await t.throwsAsync(DataParallel.start(thisThread, setup, initialWeights(cnn, 1), 'wasm', 2, 8));
  t.regex(err!.message, /could not start: .*not a stack of Dense layers/);
  const after = await trainLocally(options({ threads: 2 }));
  t.is(after.threads, 2);
});

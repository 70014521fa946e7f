// FedProx's proximal term in local training: proximalMu = μ adds μ(w − w₀)
// to every gradient, w₀ being the base weights, on the dense step
// (trainer/training/dense-step.ts) and the generic autodiff step alike. Serial
// throughout: the tfjs backend, the live-tensor count and tf.profile are
// process-wide.
import test from 'ava';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../core/backend.js';
import { initialWeights } from '../../core/model/build.js';
import { modelSpec } from '../../core/model/zoo.js';
import type { ModelSpec } from '../../core/model/spec.js';
import type { Dataset } from '../../core/dataset.js';
import { trainLocally, type TrainingPath, type TrainLocallyOptions } from './local-training.js';
import { blockImages, gaussianBlobs, sameBits } from '../../test/support/training-data.js';

test.before(async () => {
  await initBackend('wasm', { log: () => {} });
});

const PATHS: readonly TrainingPath[] = ['dense', 'generic'];

const blobs = gaussianBlobs(24, 8, 11);
const logreg = modelSpec('logreg', { featureShape: blobs.featureShape, numClasses: 2 });
// The 2NN on 8 inputs: three kernels and three biases, relu between them.
const smallTwoNN = modelSpec('2nn', { featureShape: blobs.featureShape, numClasses: 2 });
const images = blockImages(128, 12);
const twoNN = modelSpec('2nn', { featureShape: images.featureShape, numClasses: 2 });

const models: { title: string; spec: ModelSpec; data: Dataset }[] = [
  { title: 'logreg', spec: logreg, data: blobs },
  { title: '2nn', spec: smallTwoNN, data: blobs },
];

function maxAbs(values: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < values.length; i++) m = Math.max(m, Math.abs(values[i]));
  return m;
}

function difference(a: Float32Array, b: Float32Array): Float64Array {
  return Float64Array.from(a, (v, i) => v - b[i]);
}

/** ‖a − b‖. */
function distance(a: Float32Array, b: Float32Array): number {
  let sum = 0;
  for (const d of difference(a, b)) sum += d * d;
  return Math.sqrt(sum);
}

/** The kernels a training run dispatches, in order, and its result. */
async function profiled(options: TrainLocallyOptions): Promise<{ kernels: string[]; weights: Float32Array; loss: number; accuracy: number }> {
  let result: Awaited<ReturnType<typeof trainLocally>> | undefined;
  const info = await tf.profile(async () => {
    result = await trainLocally(options);
  });
  if (!result) throw new Error('trainLocally did not finish inside tf.profile');
  return { kernels: info.kernels.map((k) => k.name), weights: result.weights, loss: result.metrics.loss, accuracy: result.metrics.accuracy };
}

for (const path of PATHS) {
  test.serial(`${path}: μ = 0 runs plain SGD, kernel for kernel and bit for bit`, async (t) => {
    // 100 examples in batches of 32, two epochs: the partial last batch is covered too.
    const data = { ...images, numExamples: 100, features: images.features.subarray(0, 100 * 784), labels: images.labels.subarray(0, 100) };
    const options: TrainLocallyOptions = { spec: twoNN, baseWeights: initialWeights(twoNN, 3), data, epochs: 2, batchSize: 32, learningRate: 0.1, seed: 4, path };
    const plain = await profiled(options);
    const zero = await profiled({ ...options, proximalMu: 0 });
    const proximal = await profiled({ ...options, proximalMu: 0.01 });
    t.true(sameBits(zero.weights, plain.weights));
    t.is(zero.loss, plain.loss);
    t.is(zero.accuracy, plain.accuracy);
    t.deepEqual(zero.kernels, plain.kernels);
    // The profile does tell the paths apart: μ > 0 runs the term's kernels on top.
    t.true(proximal.kernels.length > plain.kernels.length, `${proximal.kernels.length} kernels with μ > 0, ${plain.kernels.length} without`);
    t.false(sameBits(proximal.weights, plain.weights));
  });
}

for (const path of PATHS) {
  for (const { title, spec, data } of models) {
    test.serial(`${path}: a proximal step on ${title} is w − lr·(g + μ(w − w₀)), g from a μ = 0 step`, async (t) => {
      // One batch per epoch, so each epoch is exactly one step.
      const learningRate = 0.2;
      const mu = 3;
      const common = { spec, data, batchSize: data.numExamples, learningRate, seed: 5, path };
      const w0 = initialWeights(spec, 6);

      // Step 1 starts at w₀ itself, where the term vanishes: w₁ is the plain step's, to the bit.
      const w1 = (await trainLocally({ ...common, baseWeights: w0, epochs: 1 })).weights;
      t.true(sameBits((await trainLocally({ ...common, baseWeights: w0, epochs: 1, proximalMu: mu })).weights, w1));

      // lr·g(w₁), measured by a plain step from w₁.
      const lrGradient = difference(w1, (await trainLocally({ ...common, baseWeights: w1, epochs: 1 })).weights);
      const expected = Float64Array.from(w1, (w, i) => w - (lrGradient[i] + learningRate * mu * (w - w0[i])));
      const w2 = (await trainLocally({ ...common, baseWeights: w0, epochs: 2, proximalMu: mu })).weights;

      const error = maxAbs(Float64Array.from(w2, (w, i) => w - expected[i]));
      const pull = maxAbs(Float64Array.from(w1, (w, i) => learningRate * mu * (w - w0[i])));
      t.true(error < 1e-6 * maxAbs(w1), `max error ${error} for weights up to ${maxAbs(w1)}`);
      // The check has teeth: the term moves the weights by far more than the error.
      t.true(pull > 1e4 * error, `the term moves weights by up to ${pull}, error ${error}`);
    });
  }
}

test.serial('a large μ keeps the weights near w₀; the dense and generic steps agree on it', async (t) => {
  const base = initialWeights(twoNN, 7);
  const options: TrainLocallyOptions = { spec: twoNN, baseWeights: base, data: images, epochs: 3, batchSize: 16, learningRate: 0.1, seed: 8, path: 'dense' };
  const before = tf.memory().numTensors;
  const free = await trainLocally(options);
  const held = await trainLocally({ ...options, proximalMu: 2 });
  const heldGeneric = await trainLocally({ ...options, proximalMu: 2, path: 'generic' });
  const freeDrift = distance(free.weights, base);
  const heldDrift = distance(held.weights, base);
  t.true(heldDrift < 0.6 * freeDrift, `‖w − w₀‖ ${heldDrift} with μ = 2, ${freeDrift} with μ = 0`);
  // It slows learning (two balanced classes: chance is 0.5), it does not stop it.
  t.true(held.metrics.accuracy > 0.75, `training accuracy ${held.metrics.accuracy} with μ = 2`);

  const pathGap = maxAbs(difference(held.weights, heldGeneric.weights)) / maxAbs(heldGeneric.weights);
  t.true(pathGap < 1e-5, `relative difference between the paths ${pathGap}`);
  t.true(Math.abs(held.metrics.loss - heldGeneric.metrics.loss) < 1e-5 * heldGeneric.metrics.loss, `loss ${held.metrics.loss} vs ${heldGeneric.metrics.loss}`);
  t.is(held.metrics.accuracy, heldGeneric.metrics.accuracy);
  // The base weights the term holds on the backend are gone when training is.
  t.is(tf.memory().numTensors, before);
});

for (const path of PATHS) {
  test.serial(`${path}: with μ > 0 the live tensor count is flat per batch and nothing is left behind`, async (t) => {
    const options: TrainLocallyOptions = { spec: twoNN, baseWeights: initialWeights(twoNN, 9), data: images, epochs: 1, batchSize: 32, learningRate: 0.1, seed: 9, path, proximalMu: 0.01 };
    await trainLocally(options); // builds and pools the generic step's model
    const before = tf.memory().numTensors;
    const during: number[] = [];
    await trainLocally({ ...options, onProgress: () => during.push(tf.memory().numTensors) });
    t.is(tf.memory().numTensors, before);
    t.is(Math.max(...during) - Math.min(...during), 0, `live tensors ranged ${Math.min(...during)}..${Math.max(...during)}`);
  });
}

test.serial('μ that is negative or not finite is refused, naming it, before any work', async (t) => {
  const options: TrainLocallyOptions = { spec: logreg, baseWeights: initialWeights(logreg, 1), data: blobs, epochs: 1, batchSize: 8, learningRate: 0.1, seed: 1 };
  const before = tf.memory().numTensors;
  for (const [mu, shown] of [
    [-0.01, '-0.01'],
    [Number.NaN, 'NaN'],
    [Number.POSITIVE_INFINITY, 'Infinity'],
    [Number.NEGATIVE_INFINITY, '-Infinity'],
  ] as const) {
    for (const path of PATHS) {
      const error = await t.throwsAsync(trainLocally({ ...options, path, proximalMu: mu }), { instanceOf: RangeError });
      t.true(error?.message.includes('proximalMu') && error.message.endsWith(`got ${shown}`), error?.message);
    }
  }
  t.is(tf.memory().numTensors, before);
});

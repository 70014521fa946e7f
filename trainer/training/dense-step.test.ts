// The hand-written Dense training step (trainer/training/dense-step.ts) against the
// generic autodiff step it stands in for. Serial throughout: the tfjs backend
// and the live-tensor count are process-wide.
import test from 'ava';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../core/backend.js';
import { initialWeights } from '../../core/model/build.js';
import { modelSpec } from '../../core/model/zoo.js';
import type { LayerJson, ModelSpec } from '../../core/model/spec.js';
import { Rng } from '../../core/rng.js';
import type { Dataset } from '../../core/dataset.js';
import { densePlan } from './dense-step.js';
import { trainLocally, type TrainLocallyOptions } from './local-training.js';
import { sameBits } from '../../test/support/training-data.js';

test.before(async () => {
  await initBackend('wasm', { log: () => {} });
});

test.after.always(async () => {
  await tf.setBackend('wasm');
});

function randomData(n: number, featureShape: number[], classes: number, seed: number): Dataset {
  const rng = new Rng(seed);
  const size = featureShape.reduce((a, b) => a * b, 1);
  const features = new Float32Array(n * size);
  for (let i = 0; i < features.length; i++) features[i] = rng.uniform();
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) labels[i] = rng.int(classes);
  return { name: 'random', featureShape, numClasses: classes, numExamples: n, features, labels };
}

const images = randomData(100, [28, 28, 1], 10, 1);
const flat = randomData(100, [60], 3, 2);
const twoNN = modelSpec('2nn', { featureShape: images.featureShape, numClasses: 10 });
const logreg = modelSpec('logreg', { featureShape: flat.featureShape, numClasses: 3 });

/** A Dense stack the zoo does not have: a bias-free linear hidden layer and a softmax output (probabilities, not logits). */
function softmaxStack(): ModelSpec {
  const base = modelSpec('2nn', { featureShape: flat.featureShape, numClasses: 3 });
  const layers: LayerJson[] = base.topology.config.layers.map((l) => ({ class_name: l.class_name, config: { ...l.config } }));
  layers[0].config = { ...layers[0].config, units: 16, activation: 'linear', use_bias: false };
  layers[1].config = { ...layers[1].config, units: 8 };
  layers[2].config = { ...layers[2].config, activation: 'softmax' };
  return { name: base.name, topology: { class_name: 'Sequential', config: { name: 'softmax_stack', layers } } };
}

/** max |a − b| over max |b|. */
function relativeDifference(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}

const cases: { title: string; spec: ModelSpec; data: Dataset }[] = [
  { title: '2nn', spec: twoNN, data: images },
  { title: 'logreg', spec: logreg, data: flat },
  { title: 'softmax stack', spec: softmaxStack(), data: flat },
];

test.serial('Dense stacks take the dense step; anything else stays generic', (t) => {
  for (const { spec } of cases) t.truthy(densePlan(spec), spec.topology.config.name);
  t.deepEqual(
    densePlan(twoNN)?.layers.map((l) => [l.inputs, l.units, l.activation, l.bias]),
    [
      [784, 200, 'relu', true],
      [200, 200, 'relu', true],
      [200, 10, 'linear', true],
    ],
  );
  t.is(densePlan(modelSpec('cnn', { featureShape: [28, 28, 1], numClasses: 10 })), undefined);
});

for (const backend of ['wasm', 'cpu'] as const) {
  for (const { title, spec, data } of cases) {
    test.serial(`${backend}: the dense and generic steps agree on ${title}`, async (t) => {
      await tf.setBackend(backend);
      // 100 examples in batches of 32: three full batches and a partial one per epoch.
      const options: TrainLocallyOptions = { spec, baseWeights: initialWeights(spec, 3), data, epochs: 2, batchSize: 32, learningRate: 0.1, seed: 4 };
      const generic = await trainLocally({ ...options, path: 'generic' });
      const dense = await trainLocally({ ...options, path: 'dense' });
      t.is(generic.path, 'generic');
      t.is(dense.path, 'dense');
      t.false(sameBits(dense.weights, options.baseWeights));
      t.true(relativeDifference(dense.weights, generic.weights) < 1e-5, `relative difference ${relativeDifference(dense.weights, generic.weights)}`);
      t.true(Math.abs(dense.metrics.loss - generic.metrics.loss) < 1e-5 * generic.metrics.loss, `loss ${dense.metrics.loss} vs ${generic.metrics.loss}`);
      t.is(dense.metrics.accuracy, generic.metrics.accuracy);
      t.is(dense.examplesTrained, generic.examplesTrained);
      t.is(dense.epochsCompleted, generic.epochsCompleted);
    });
  }
}

test.serial('wasm: examples whose label probability is clipped get no gradient on either step', async (t) => {
  await tf.setBackend('wasm');
  const spec = softmaxStack();
  // Large weights saturate the softmax, so many labels get probabilities below the loss's 1e-7 clip.
  const baseWeights = initialWeights(spec, 8).map((w) => w * 40);
  const options: TrainLocallyOptions = { spec, baseWeights, data: flat, epochs: 1, batchSize: 50, learningRate: 0.01, seed: 9 };
  const generic = await trainLocally({ ...options, path: 'generic' });
  const dense = await trainLocally({ ...options, path: 'dense' });
  t.true(generic.metrics.loss > 3, `loss ${generic.metrics.loss}: the softmax is not saturated`);
  t.true(relativeDifference(dense.weights, generic.weights) < 1e-5, `relative difference ${relativeDifference(dense.weights, generic.weights)}`);
  t.true(Math.abs(dense.metrics.loss - generic.metrics.loss) < 1e-5 * generic.metrics.loss);
});

test.serial('wasm: the dense step is deterministic and leaves no tensors behind', async (t) => {
  await tf.setBackend('wasm');
  const options: TrainLocallyOptions = { spec: twoNN, baseWeights: initialWeights(twoNN, 5), data: images, epochs: 2, batchSize: 32, learningRate: 0.1, seed: 6 };
  await trainLocally(options);
  const before = tf.memory().numTensors;
  const during: number[] = [];
  const a = await trainLocally({ ...options, onProgress: () => during.push(tf.memory().numTensors) });
  t.is(tf.memory().numTensors, before);
  t.is(Math.max(...during) - Math.min(...during), 0);
  const b = await trainLocally(options);
  const c = await trainLocally({ ...options, seed: 7 });
  t.is(a.path, 'dense');
  t.true(sameBits(a.weights, b.weights));
  t.is(a.metrics.loss, b.metrics.loss);
  t.false(sameBits(a.weights, c.weights));

  // Stopped early, refused up front, or failing on bad weights: still nothing left over.
  const stopped = await trainLocally({ ...options, epochs: 1000, deadline: Date.now() + 100 });
  t.true(stopped.partial);
  await t.throwsAsync(trainLocally({ ...options, path: 'dense', spec: modelSpec('cnn', { featureShape: [28, 28, 1], numClasses: 10 }) }), {
    instanceOf: RangeError,
    message: /not a stack of Dense layers/,
  });
  await t.throwsAsync(trainLocally({ ...options, baseWeights: new Float32Array(5) }), { instanceOf: RangeError, message: /parameters/ });
  t.is(tf.memory().numTensors, before);
});

// Every test here is serial: the tfjs backend is process-wide state.
import test from 'ava';
import * as tf from '@tensorflow/tfjs';
import { BackendError, backendVersions, ensureBackendFor, initBackend, missingTrainingKernels, trainingKernels } from './backend.js';
import { initialWeights } from './model/build.js';
import { inputShape, numOutputs, type ModelSpec } from './model/spec.js';
import { modelSpec } from './model/zoo.js';
import type { Dataset } from './dataset.js';
import { Rng } from './rng.js';
import { trainLocally } from '../trainer/training/local-training.js';

const mnistInput = { featureShape: [28, 28, 1], numClasses: 10 } as const;

function randomData(spec: ModelSpec, n: number, seed: number): Dataset {
  const rng = new Rng(seed);
  const shape = inputShape(spec);
  const classes = numOutputs(spec);
  const d = shape.reduce((a, b) => a * b, 1);
  const features = new Float32Array(n * d);
  for (let i = 0; i < features.length; i++) features[i] = rng.uniform();
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) labels[i] = rng.int(classes);
  return { name: 'random', featureShape: shape, numClasses: classes, numExamples: n, features, labels };
}

/** Kernels a call really ran on the current backend, from tf.profile (custom-gradient pseudo-ops dropped). */
async function kernelsRun(f: () => Promise<unknown>): Promise<string[]> {
  const info = await tf.profile(async () => {
    await f();
    return [];
  });
  return [...new Set(info.kernelNames)].filter((k) => tf.getKernel(k, tf.getBackend()) !== undefined);
}

test.serial("initBackend('auto') lands on wasm here and says why the native binding was skipped", async (t) => {
  const logs: string[] = [];
  const name = await initBackend('auto', { log: (m) => logs.push(m) });
  t.is(name, 'wasm');
  t.is(tf.getBackend(), 'wasm');
  t.is(logs.length, 1);
  t.regex(logs[0], /WebAssembly/);
  t.regex(logs[0], /@tensorflow\/tfjs-node is not installed/);
  t.regex(logs[0], /npm install @tensorflow\/tfjs-node/);
  const versions = backendVersions();
  t.is(versions['tfjs-core'], tf.version_core);
  t.is(versions['tfjs-backend-wasm'], tf.version_core);
});

test.serial('an explicit backend that cannot load throws and says how to fix it', async (t) => {
  await t.throwsAsync(initBackend('tensorflow', { log: () => {} }), {
    instanceOf: BackendError,
    message: /not installed.*npm install @tensorflow\/tfjs-node@/,
  });
  await t.throwsAsync(initBackend('tensorflow-gpu', { log: () => {} }), {
    instanceOf: BackendError,
    message: /npm install @tensorflow\/tfjs-node-gpu.*CUDA/,
  });
  // A failed attempt leaves the working backend in place.
  t.is(tf.getBackend(), 'wasm');
  t.is(await initBackend('cpu', { log: () => {} }), 'cpu');
  t.is(await initBackend('wasm', { log: () => {} }), 'wasm');
});

test.serial('wasm and cpu have every kernel the zoo models train with', (t) => {
  const cnn = modelSpec('cnn', mnistInput);
  // tfjs-backend-wasm ships no Conv2DBackpropFilter; core/tfjs-wasm-kernels.ts adds it when wasm loads.
  t.deepEqual(missingTrainingKernels(cnn, 'wasm'), []);
  t.deepEqual(missingTrainingKernels(cnn, 'cpu'), []);
  t.deepEqual(missingTrainingKernels(modelSpec('2nn', mnistInput), 'wasm'), []);
  t.deepEqual(missingTrainingKernels(modelSpec('logreg', mnistInput), 'wasm'), []);
});

test.serial('ensureBackendFor keeps a backend that has every kernel', async (t) => {
  const logs: string[] = [];
  t.is(await ensureBackendFor(modelSpec('2nn', mnistInput), { log: (m) => logs.push(m) }), 'wasm');
  t.deepEqual(logs, []);
});

test.serial('ensureBackendFor moves the cnn from a backend lacking a kernel to cpu, which then trains it', async (t) => {
  const cnn = modelSpec('cnn', mnistInput);
  const logs: string[] = [];
  // Every zoo model now trains on wasm, so take a kernel away to have a backend that cannot.
  const filterGrad = tf.getKernel('Conv2DBackpropFilter', 'wasm');
  tf.unregisterKernel('Conv2DBackpropFilter', 'wasm');
  try {
    t.is(await ensureBackendFor(cnn, { log: (m) => logs.push(m) }), 'cpu');
  } finally {
    tf.registerKernel(filterGrad);
  }
  t.is(tf.getBackend(), 'cpu');
  t.is(logs.length, 1);
  t.regex(logs[0], /wasm lacks kernel Conv2DBackpropFilter.*cnn.*on cpu instead/);

  // The cpu backend manages about one CNN example per second: three examples,
  // one full batch and one partial.
  const data = randomData(cnn, 3, 11);
  const base = initialWeights(cnn, 1);
  let result: Awaited<ReturnType<typeof trainLocally>> | undefined;
  const used = await kernelsRun(async () => {
    result = await trainLocally({ spec: cnn, baseWeights: base, data, epochs: 1, batchSize: 2, learningRate: 0.05, seed: 3 });
  });
  if (!result) throw new Error('training did not run');
  t.is(result.examplesTrained, 3);
  t.is(result.epochsCompleted, 1);
  t.true(result.weights.every(Number.isFinite));
  t.true(result.weights.some((w, i) => w !== base[i]));
  t.true(Number.isFinite(result.metrics.loss));
  // The static kernel table must cover what training really ran, or missingTrainingKernels would miss a gap.
  const listed = new Set(trainingKernels(cnn));
  t.deepEqual(used.filter((k) => !listed.has(k)), []);
  t.true(used.includes('Conv2DBackpropFilter'));

  await initBackend('wasm', { log: () => {} });
});

test.serial('the kernel table covers every allowlisted layer and activation', async (t) => {
  // Every layer class and activation the allowlist admits, in one small model.
  const everything: ModelSpec = {
    name: 'cnn',
    topology: {
      class_name: 'Sequential',
      config: {
        name: 'everything',
        layers: [
          { class_name: 'InputLayer', config: { name: 'in', batch_input_shape: [null, 36] } },
          { class_name: 'Reshape', config: { name: 'img', target_shape: [6, 6, 1] } },
          { class_name: 'Conv2D', config: { name: 'c', filters: 2, kernel_size: 3, padding: 'same', activation: 'tanh' } },
          { class_name: 'MaxPooling2D', config: { name: 'mp', pool_size: 1 } },
          { class_name: 'AveragePooling2D', config: { name: 'ap' } },
          { class_name: 'Flatten', config: { name: 'f' } },
          { class_name: 'Dropout', config: { name: 'd', rate: 0.5 } },
          { class_name: 'Dense', config: { name: 'h1', units: 4, activation: 'sigmoid' } },
          { class_name: 'Dense', config: { name: 'h2', units: 4, activation: 'relu' } },
          { class_name: 'Dense', config: { name: 'o', units: 3 } },
          { class_name: 'Activation', config: { name: 'a', activation: 'softmax' } },
        ],
      },
    },
  };
  for (const backend of ['cpu', 'wasm']) {
    await initBackend(backend as 'cpu' | 'wasm', { log: () => {} });
    for (const spec of [everything, modelSpec('2nn', mnistInput), modelSpec('logreg', { featureShape: [5], numClasses: 3 })]) {
      if (missingTrainingKernels(spec, backend).length > 0) continue;
      const data = randomData(spec, 3, 5);
      const used = await kernelsRun(() =>
        trainLocally({ spec, baseWeights: initialWeights(spec, 2), data, epochs: 1, batchSize: 2, learningRate: 0.1, seed: 1 }),
      );
      const listed = new Set(trainingKernels(spec));
      t.deepEqual(used.filter((k) => !listed.has(k)), [], `${backend}: ${spec.topology.config.name}`);
    }
  }
  t.is(tf.getBackend(), 'wasm');
});

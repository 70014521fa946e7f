import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
import { initialWeights } from '../dist/core/model.js';
import { modelSpec } from '../dist/core/model-zoo.js';
import { trainLocally } from '../dist/trainer/local-training.js';
await initBackend('wasm', { log: () => {} });
const spec = modelSpec('cnn', { featureShape: [28, 28, 1], numClasses: 10 });
const n = 320; const features = new Float32Array(n * 784).map(() => Math.random()); const labels = new Uint8Array(n).map(() => Math.floor(Math.random() * 10));
const data = { name: 'r', featureShape: [28, 28, 1], numClasses: 10, numExamples: n, features, labels };
const be = tf.backend();
for (let round = 0; round < 4; round++) {
  await trainLocally({ spec, baseWeights: initialWeights(spec, 1), data, epochs: 1, batchSize: 32, learningRate: 0.01, seed: round });
  console.log(`round ${round}: tensors ${tf.memory().numTensors} dataIds ${be.numDataIds()} heap ${(be.wasm.HEAPU8.length / 2 ** 20).toFixed(0)} MiB`);
}

import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
import { initialWeights } from '../dist/core/model.js';
import { modelSpec } from '../dist/core/model-zoo.js';
import { trainLocally } from '../dist/trainer/local-training.js';
await initBackend(process.argv[2] ?? 'wasm', { log: () => {} });
const n = 200;
const features = new Float32Array(n * 784); for (let i = 0; i < features.length; i++) features[i] = Math.random();
const labels = new Uint8Array(n); for (let i = 0; i < n; i++) labels[i] = Math.floor(Math.random() * 10);
const data = { name: 'rand', featureShape: [28, 28, 1], numClasses: 10, numExamples: n, features, labels };
for (const name of ['2nn', 'logreg']) {
  const spec = modelSpec(name, { featureShape: [28, 28, 1], numClasses: 10 });
  const base = initialWeights(spec, 1);
  const o = { spec, baseWeights: base, data, epochs: 2, batchSize: 32, learningRate: 0.1, seed: 3 };
  const g = await trainLocally({ ...o, path: 'generic' });
  const before = tf.memory().numTensors;
  const f = await trainLocally({ ...o, path: 'dense' });
  const f2 = await trainLocally({ ...o });
  let diff = 0, scale = 0, moved = 0;
  for (let i = 0; i < g.weights.length; i++) { diff = Math.max(diff, Math.abs(g.weights[i] - f.weights[i])); scale = Math.max(scale, Math.abs(g.weights[i])); moved = Math.max(moved, Math.abs(g.weights[i] - base[i])); }
  console.log(name, g.path, f.path, f2.path, 'max diff', diff, 'scale', scale, 'max update', moved, 'rel', diff / scale, 'loss', g.metrics.loss, f.metrics.loss, 'acc', g.metrics.accuracy, f.metrics.accuracy, 'leak', tf.memory().numTensors - before, 'same bits', Buffer.compare(Buffer.from(f.weights.buffer), Buffer.from(f2.weights.buffer)) === 0);
}

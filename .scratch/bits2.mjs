// prints a hash of generic-path weights for a fixed problem, for comparing builds
import * as tf from '@tensorflow/tfjs';
import { createHash } from 'node:crypto';
const root = process.argv[3];
const { initBackend } = await import(root + '/dist/core/backend.js');
const { initialWeights } = await import(root + '/dist/core/model.js');
const { modelSpec } = await import(root + '/dist/core/model-zoo.js');
const { trainLocally } = await import(root + '/dist/trainer/local-training.js');
const w = await import("@tensorflow/tfjs-backend-wasm"); await tf.setBackend("wasm");
let s = 1; const rnd = () => ((s = (s * 16807) % 2147483647) / 2147483647);
const n = 100;
const features = new Float32Array(n * 784).map(() => rnd());
const labels = new Uint8Array(n).map(() => Math.floor(rnd() * 10));
const data = { name: 'rand', featureShape: [28, 28, 1], numClasses: 10, numExamples: n, features, labels };
for (const name of ['2nn', 'logreg']) {
  const spec = modelSpec(name, { featureShape: [28, 28, 1], numClasses: 10 });
  const r = await trainLocally({ spec, baseWeights: initialWeights(spec, 1), data, epochs: 2, batchSize: 32, learningRate: 0.1, seed: 3, path: 'generic' });
  console.log(name, createHash('sha256').update(Buffer.from(r.weights.buffer)).digest('hex').slice(0, 16), r.metrics.loss, r.metrics.accuracy, r.path);
}

import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
import { initialWeights } from '../dist/core/model.js';
import { modelSpec } from '../dist/core/model-zoo.js';
import { trainLocally } from '../dist/trainer/local-training.js';
const backend = process.argv[2] ?? 'wasm';
const batches = (process.argv[3] ?? '10,32,64').split(',').map(Number);
const reps = Number(process.argv[4] ?? 5);
await initBackend(backend, { log: () => {} });
const n = 2048;
const features = new Float32Array(n * 784); for (let i = 0; i < features.length; i++) features[i] = Math.random();
const labels = new Uint8Array(n); for (let i = 0; i < n; i++) labels[i] = Math.floor(Math.random() * 10);
const data = { name: 'rand', featureShape: [28, 28, 1], numClasses: 10, numExamples: n, features, labels };
const spec = modelSpec('2nn', { featureShape: [28, 28, 1], numClasses: 10 });
const base = initialWeights(spec, 1);
const epochs = backend === 'cpu' ? 1 : 2;
for (const bs of batches) {
  await trainLocally({ spec, baseWeights: base, data: { ...data, numExamples: 256, features: features.subarray(0, 256*784), labels: labels.subarray(0,256) }, epochs: 1, batchSize: bs, learningRate: 0.01, seed: 1 });
  const r = [];
  for (let k = 0; k < reps; k++) {
    const res = await trainLocally({ spec, baseWeights: base, data, epochs, batchSize: bs, learningRate: 0.01, seed: k });
    r.push(res.examplesTrained / res.metrics.seconds);
  }
  r.sort((a, b) => a - b);
  console.log(`${tf.getBackend()} batch ${bs}: median ${r[Math.floor(r.length/2)].toFixed(0)} samples/s  [${r.map(x=>x.toFixed(0)).join(' ')}]`);
}

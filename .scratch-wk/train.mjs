// usage: node train.mjs <backend> <batch> <batches> [profile]
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
import { initialWeights, inputShape } from '../dist/core/model.js';
import { modelSpec } from '../dist/core/model-zoo.js';
import { trainLocally } from '../dist/trainer/local-training.js';
import { Rng } from '../dist/datasets/random.js';
const [backend, batchS, batchesS, prof] = process.argv.slice(2);
const batch = Number(batchS), batches = Number(batchesS);
await initBackend(backend, { log: () => {} });
const spec = modelSpec('cnn', { featureShape: [28, 28, 1], numClasses: 10 });
function data(n, seed) {
  const rng = new Rng(seed); const d = 784;
  const features = new Float32Array(n * d); for (let i = 0; i < features.length; i++) features[i] = rng.uniform();
  const labels = new Uint8Array(n); for (let i = 0; i < n; i++) labels[i] = rng.int(10);
  return { name: 'random', featureShape: [28, 28, 1], numClasses: 10, numExamples: n, features, labels };
}
const base = initialWeights(spec, 1);
const times = {};
if (prof) {
  for (const cfg of tf.getKernelsForBackend(backend)) {
    const orig = cfg.kernelFunc;
    tf.unregisterKernel(cfg.kernelName, backend);
    tf.registerKernel({ ...cfg, kernelFunc: (a) => { const t0 = performance.now(); const r = orig(a); const dt = performance.now() - t0;
      const key = cfg.kernelName === 'Conv2D' || cfg.kernelName === 'FusedConv2D' || cfg.kernelName.startsWith('Conv2DBack') ? `${cfg.kernelName} ${a.inputs[Object.keys(a.inputs)[0]].shape.join('x')}` : cfg.kernelName === '_FusedMatMul' || cfg.kernelName === 'BatchMatMul' ? `${cfg.kernelName} ${a.inputs.a.shape.join('x')}·${a.inputs.b.shape.join('x')} tA=${a.attrs.transposeA} tB=${a.attrs.transposeB}` : cfg.kernelName === 'Sum' || cfg.kernelName === 'Identity' || cfg.kernelName === 'Add' || cfg.kernelName === 'Multiply' ? `${cfg.kernelName} ${Object.values(a.inputs).map(t => t.shape.join('x')).join(',')} ${JSON.stringify(a.attrs ?? {})}` : cfg.kernelName;
      (times[key] ??= { ms: 0, n: 0 }); times[key].ms += dt; times[key].n++; return r; } });
  }
}
// warm-up batch
await trainLocally({ spec, baseWeights: base, data: data(batch, 1), epochs: 1, batchSize: batch, learningRate: 0.01, seed: 1 });
for (const k in times) delete times[k];
const t0 = performance.now();
const r = await trainLocally({ spec, baseWeights: base, data: data(batch * batches, 2), epochs: 1, batchSize: batch, learningRate: 0.01, seed: 1 });
const sec = (performance.now() - t0) / 1000;
const out = { backend: tf.getBackend(), batch, batches, samplesPerSec: +(batch * batches / sec).toFixed(1), reported: +r.metrics.examples_per_second.toFixed(1), loss: +r.metrics.loss.toFixed(3) };
console.log(JSON.stringify(out));
if (prof) {
  const total = Object.values(times).reduce((a, b) => a + b.ms, 0);
  const rows = Object.entries(times).sort((a, b) => b[1].ms - a[1].ms).slice(0, 25);
  console.log(`wall ${(sec*1000/batches).toFixed(1)} ms/batch, in kernels ${(total/batches).toFixed(1)} ms/batch`);
  for (const [k, v] of rows) console.log(`${(v.ms / batches).toFixed(2).padStart(8)} ms/batch ${(100*v.ms/total).toFixed(1).padStart(5)}%  x${v.n / batches}  ${k}`);
}

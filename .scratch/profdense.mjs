import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
import { initialWeights } from '../dist/core/model.js';
import { modelSpec } from '../dist/core/model-zoo.js';
import { DenseTrainer, densePlan } from '../dist/trainer/dense-step.js';
const backend = process.argv[2] ?? 'wasm';
const B = Number(process.argv[3] ?? 32);
await initBackend(backend, { log: () => {} });
const spec = modelSpec('2nn', { featureShape: [28, 28, 1], numClasses: 10 });
const plan = densePlan(spec);
const tr = new DenseTrainer(plan, initialWeights(spec, 1), 0.01);
function time(name, fn, iters = 200, reps = 7) {
  for (let i = 0; i < 10; i++) fn(i);
  const wall = [], cpu = [];
  for (let r = 0; r < reps; r++) { const c0 = process.cpuUsage(); const t0 = performance.now(); for (let i = 0; i < iters; i++) fn(i); wall.push((performance.now() - t0) / iters); const c = process.cpuUsage(c0); cpu.push((c.user + c.system) / 1000 / iters); }
  wall.sort((a, b) => a - b); cpu.sort((a, b) => a - b);
  console.log(`${name.padEnd(50)} wall ${(wall[reps >> 1]).toFixed(3)} ms cpu ${cpu[reps >> 1].toFixed(3)} ms`);
  return wall[reps >> 1];
}
const xs = new Float32Array(B * 784).map(() => Math.random());
const ys = new Float32Array(B * 10); for (let i = 0; i < B; i++) ys[i * 10 + (i % 10)] = 1;
const t = time('dense step incl. upload + metric dispose', () => { const x = tf.tensor2d(xs, [B, 784]); const y = tf.tensor2d(ys, [B, 10]); const r = tr.step(x, y); tf.dispose([x, y, r.loss, r.correct]); });
console.log(`  = ${(B / t * 1000).toFixed(0)} samples/s`);
const prof = await tf.profile(() => { const x = tf.tensor2d(xs, [B, 784]); const y = tf.tensor2d(ys, [B, 10]); const r = tr.step(x, y); tf.dispose([x, y, r.loss, r.correct]); });
const kt = {}; for (const k of prof.kernels) { const e = (kt[k.name] ??= [0, 0]); e[0]++; e[1] += k.kernelTimeMs; }
console.log('kernels per step', prof.kernels.length, JSON.stringify(Object.fromEntries(Object.entries(kt).sort((a, b) => b[1][1] - a[1][1]).map(([k, v]) => [k, [v[0], +v[1].toFixed(3)]]))));
console.log(prof.kernels.filter(k => /MatMul|Transpose|Sub/.test(k.name)).map(k => `${k.name}${JSON.stringify(k.inputShapes)} ${k.kernelTimeMs.toFixed(3)}`).join('\n'));

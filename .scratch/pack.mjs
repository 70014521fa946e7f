import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
await initBackend(process.argv[2] ?? 'wasm', { log: () => {} });
function time(name, fn, iters = 200, reps = 7) {
  for (let i = 0; i < 10; i++) fn(i);
  const wall = [];
  for (let r = 0; r < reps; r++) { const t0 = performance.now(); for (let i = 0; i < iters; i++) fn(i); wall.push((performance.now() - t0) / iters); }
  wall.sort((a, b) => a - b);
  console.log(`${name.padEnd(60)} ${(wall[reps >> 1]*1000).toFixed(1)} us`);
}
for (const [M, K, N] of [[200, 32, 784], [200, 784, 32], [32, 784, 200], [784, 32, 200], [200, 32, 200], [200, 200, 32], [32,200,200], [8, 32, 784], [8,784,32], [1, 784, 200], [1, 200, 784],[1,32,784]]) {
  const a = tf.randomNormal([M, K]), b = tf.randomNormal([K, N]);
  time(`[${M},${K}]x[${K},${N}] cached b`, () => tf.matMul(a, b).dispose());
  time(`[${M},${K}]x[${K},${N}] new b (clone)`, () => { const c = tf.clone(b); tf.matMul(a, c).dispose(); c.dispose(); });
}

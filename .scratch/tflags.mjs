import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
await initBackend(process.argv[2] ?? 'wasm', { log: () => {} });
function time(name, fn, iters = 100, reps = 5) {
  for (let i = 0; i < 5; i++) fn(i);
  const wall = [];
  for (let r = 0; r < reps; r++) { const t0 = performance.now(); for (let i = 0; i < iters; i++) fn(i); wall.push((performance.now() - t0) / iters); }
  wall.sort((a, b) => a - b);
  console.log(`${name.padEnd(60)} ${(wall[reps >> 1]*1000).toFixed(1)} us`);
}
const a = tf.randomNormal([200, 32]), b = tf.randomNormal([200, 32]), W = tf.randomNormal([200, 200]), x = tf.randomNormal([32,784]);
time('[200,32]x[200,32]^T flag', () => tf.matMul(a, b, false, true).dispose());
time('[200,200]^T x [200,32] flag', () => tf.matMul(W, a, true, false).dispose());
time('[32,784]^T x [32,200] flag', () => tf.matMul(x, tf.transpose(a), true, false).dispose());
time('[32,200]x[200,200]^T flag', () => tf.matMul(tf.transpose(a), W, false, true).dispose());
const x2 = tf.randomNormal([32, 784]), h = tf.randomNormal([32, 200]);
time('x2^T h flag (as in profile.mjs)', () => tf.matMul(x2, h, true, false).dispose());
const hT = tf.transpose(a);
time('x^T hT flag', () => tf.matMul(x, hT, true, false).dispose());
time('x2^T hT flag', () => tf.matMul(x2, hT, true, false).dispose());
time('x^T h flag', () => tf.matMul(x, h, true, false).dispose());
console.log(await h.data().then(d=>d.slice(0,5)), await hT.data().then(d=>d.slice(0,5)));

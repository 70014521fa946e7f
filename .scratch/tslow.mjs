import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
await initBackend('wasm', { log: () => {} });
function time(name, fn, iters = 50, reps = 5) {
  for (let i = 0; i < 5; i++) fn(i);
  const wall = [];
  for (let r = 0; r < reps; r++) { const t0 = performance.now(); for (let i = 0; i < iters; i++) fn(i); wall.push((performance.now() - t0) / iters); }
  wall.sort((a, b) => a - b);
  console.log(`${name.padEnd(60)} ${(wall[reps >> 1]*1000).toFixed(1)} us`);
}
const B = 32;
const mk = (s) => tf.randomNormal(s);
const x2 = mk([B, 784]), h = mk([B, 200]);
time('x2^T h fresh process', () => tf.matMul(x2, h, true, false).dispose());
const step = process.argv[2];
if (step === 'alloc') { const junk = []; for (let i = 0; i < 100; i++) junk.push(tf.randomNormal([784,200])); tf.dispose(junk); }
if (step === 'scalar') { for (let i = 0; i < 10000; i++) tf.scalar(1).dispose(); }
if (step === 'fused') { const W = mk([784,200]), b = mk([200]); for (let i = 0; i < 100; i++) tf.fused.matMul({a: x2, b: W, bias: b, activation: 'relu'}).dispose(); }
time('x2^T h after ' + step, () => tf.matMul(x2, h, true, false).dispose());
time('x2^T h, 0-filled h', () => { const z = tf.zeros([B,200]); tf.matMul(x2, z, true, false).dispose(); z.dispose(); });

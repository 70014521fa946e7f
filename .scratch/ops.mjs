import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
await initBackend(process.argv[2] ?? 'wasm', { log: () => {} });
function time(name, fn, iters = 200, reps = 7) {
  for (let i = 0; i < 10; i++) fn(i);
  const wall = [];
  for (let r = 0; r < reps; r++) { const t0 = performance.now(); for (let i = 0; i < iters; i++) fn(i); wall.push((performance.now() - t0) / iters); }
  wall.sort((a, b) => a - b);
  console.log(`${name.padEnd(50)} ${(wall[reps >> 1]*1000).toFixed(1)} us`);
}
const W = tf.randomNormal([200, 784]), D = tf.randomNormal([200, 784]);
const s = tf.randomNormal([200, 200]);
const x = tf.randomNormal([32, 784]), xT = tf.randomNormal([784, 32]);
time('sub [200,784]', () => tf.sub(W, D).dispose());
time('add [200,784]', () => tf.add(W, D).dispose());
time('mul [200,784] by scalar', () => tf.mul(W, 0.5).dispose());
time('clone [200,784]', () => tf.clone(W).dispose());
time('sub [200,200]', () => tf.sub(s, s).dispose());
time('transpose [200,200]', () => tf.transpose(s).dispose());
time('transpose [32,784]', () => tf.transpose(x).dispose());
time('matMul Wt1[200,784]·xT[784,32]', () => tf.matMul(W, xT).dispose());
time('matMul dZ[200,32]·x[32,784]', () => { tf.matMul(tf.slice(W, [0,0],[200,32]), x).dispose() });
const dz = tf.randomNormal([200, 32]);
time('matMul dZ[200,32]·x[32,784] (pre-sliced)', () => tf.matMul(dz, x).dispose());
time('matMul x[32,784]^T... as xT[784,32]·dZ^T[32,200] ', () => tf.matMul(xT, tf.randomNormal([32,200])).dispose());
const dzt = tf.randomNormal([32, 200]);
time('matMul xT[784,32]·dzt[32,200] (dW1 batch-major)', () => tf.matMul(xT, dzt).dispose());
time('tensor upload [32,784]', () => tf.tensor(new Float32Array(32*784), [32,784]).dispose());
time('scalar create', () => tf.scalar(1).dispose());
time('tidy(empty)', () => tf.tidy(() => {}));

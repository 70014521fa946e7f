import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
const orig = {};
await import('@tensorflow/tfjs-backend-wasm');
orig.k = tf.getKernel('MaxPoolGrad', 'wasm');
await initBackend('wasm', { log: () => {} });
const mine = tf.getKernel('MaxPoolGrad', 'wasm');
function time(f, reps = 9) { f(); const ts = []; for (let i = 0; i < reps; i++) { const t0 = performance.now(); f(); ts.push(performance.now() - t0); } ts.sort((a,b)=>a-b); return ts[Math.floor(ts.length/2)].toFixed(2); }
for (const [xs] of [[[32,28,28,32]], [[32,14,14,64]]]) {
  const x = tf.randomUniform(xs); const y = tf.maxPool(x, 2, 2, 'valid'); const dy = tf.randomUniform(y.shape);
  const run = () => tf.tidy(() => { tf.engine().runKernel('MaxPoolGrad', {dy, input: x, output: y}, {filterSize: 2, strides: 2, pad: 'valid'}).dataSync(); });
  const a = time(run);
  tf.unregisterKernel('MaxPoolGrad', 'wasm'); tf.registerKernel(orig.k);
  const b = time(run);
  tf.unregisterKernel('MaxPoolGrad', 'wasm'); tf.registerKernel(mine);
  console.log(xs.join('x'), 'mine', a, 'orig', b);
}

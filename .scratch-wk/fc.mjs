import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
await initBackend('wasm', { log: () => {} });
function time(f, reps = 7) { f(); const ts = []; for (let i = 0; i < reps; i++) { const t0 = performance.now(); f(); ts.push(performance.now() - t0); } ts.sort((a,b)=>a-b); return ts[Math.floor(ts.length/2)].toFixed(2); }
for (const B of [10, 32, 64]) {
  const x = tf.randomUniform([B, 3136]), W = tf.randomUniform([3136, 512]), dy = tf.randomUniform([B, 512]);
  const r = {};
  r.fwdCached = time(() => tf.tidy(() => { tf.matMul(x, W).dataSync(); }));
  r.fwdFresh = time(() => tf.tidy(() => { tf.matMul(x, tf.clone(W)).dataSync(); }));
  r.clone = time(() => tf.tidy(() => { tf.clone(W).dataSync(); }));
  r.fwdSwapped = time(() => tf.tidy(() => { tf.matMul(tf.clone(W), x, true, true).dataSync(); }));
  r.dW = time(() => tf.tidy(() => { tf.matMul(x, dy, true, false).dataSync(); }));
  r.dx = time(() => tf.tidy(() => { tf.matMul(dy, W, false, true).dataSync(); }));
  console.log(`B=${B} fc1`, JSON.stringify(r));
  tf.dispose([x, W, dy]);
}

import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
await initBackend('wasm', { log: () => {} });
function time(f, reps = 7) { f(); const ts = []; for (let i = 0; i < reps; i++) { const t0 = performance.now(); f(); ts.push(performance.now() - t0); } ts.sort((a,b)=>a-b); return ts[Math.floor(ts.length/2)].toFixed(2); }
for (const B of [32]) {
  const x = tf.randomUniform([B, 3136]), W = tf.randomUniform([3136, 512]);
  const r = {};
  r.fwdFresh = time(() => tf.tidy(() => { tf.matMul(x, tf.clone(W)).dataSync(); }));
  r.conv1x1Fresh = time(() => tf.tidy(() => { tf.engine().runKernel('Conv2D', {x: x.reshape([B,1,1,3136]), filter: tf.clone(W).reshape([1,1,3136,512])}, {strides: 1, dilations: 1, pad: 'valid', dataFormat: 'NHWC'}).dataSync(); }));
  r.conv1x1Cached = time(() => tf.tidy(() => { tf.engine().runKernel('Conv2D', {x: x.reshape([B,1,1,3136]), filter: W.reshape([1,1,3136,512])}, {strides: 1, dilations: 1, pad: 'valid', dataFormat: 'NHWC'}).dataSync(); }));
  r.transposeW = time(() => tf.tidy(() => { tf.transpose(W).dataSync(); }));
  r.clone = time(() => tf.tidy(() => { tf.clone(W).dataSync(); }));
  console.log(`B=${B} fc1`, JSON.stringify(r));
}

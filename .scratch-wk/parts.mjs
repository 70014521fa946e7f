import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
await initBackend('wasm', { log: () => {} });
const B = Number(process.argv[2] ?? 64);
function time(f, reps = 7) {
  f(); const ts = [];
  for (let i = 0; i < reps; i++) { const t0 = performance.now(); f(); ts.push(performance.now() - t0); }
  ts.sort((a,b)=>a-b); return ts[Math.floor(ts.length/2)].toFixed(1);
}
const x = tf.randomUniform([B,14,14,32]), dy = tf.randomUniform([B,14,14,64]);
const xT = tf.transpose(x, [3,1,2,0]), dyT = tf.transpose(dy, [1,2,0,3]);
const r = {};
r.xT = time(() => tf.tidy(() => { tf.transpose(x, [3,1,2,0]).dataSync(); }));
r.dyT = time(() => tf.tidy(() => { tf.transpose(dy, [1,2,0,3]).dataSync(); }));
// fresh filter each time, like the kernel (operator creation + packing)
r.convFresh = time(() => tf.tidy(() => { const f = tf.clone(dyT); tf.engine().runKernel('Conv2D', {x: xT, filter: f}, {strides: 1, dilations: 1, pad: [[0,0],[2,2],[2,2],[0,0]], dataFormat: 'NHWC'}).dataSync(); }));
r.clone = time(() => tf.tidy(() => { tf.clone(dyT).dataSync(); }));
r.convCached = time(() => tf.tidy(() => { tf.engine().runKernel('Conv2D', {x: xT, filter: dyT}, {strides: 1, dilations: 1, pad: [[0,0],[2,2],[2,2],[0,0]], dataFormat: 'NHWC'}).dataSync(); }));
const c = tf.engine().runKernel('Conv2D', {x: xT, filter: dyT}, {strides: 1, dilations: 1, pad: [[0,0],[2,2],[2,2],[0,0]], dataFormat: 'NHWC'});
r.outT = time(() => tf.tidy(() => { tf.transpose(c, [1,2,0,3]).dataSync(); }));
// matmul alternative core: [800 x K] x [K x 64]
const K = B*14*14;
const a = tf.randomUniform([800, K]), b = tf.randomUniform([K, 64]);
r.matmul = time(() => tf.tidy(() => { tf.matMul(a, b).dataSync(); }));
const aT = tf.randomUniform([K, 800]);
r.matmulTA = time(() => tf.tidy(() => { tf.matMul(aT, b, true, false).dataSync(); }));
console.log(`B=${B}`, JSON.stringify(r));

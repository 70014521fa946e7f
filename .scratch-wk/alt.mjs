import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
await initBackend('wasm', { log: () => {} });
function time(f, reps = 7) { f(); const ts = []; for (let i = 0; i < reps; i++) { const t0 = performance.now(); f(); ts.push(performance.now() - t0); } ts.sort((a,b)=>a-b); return ts[Math.floor(ts.length/2)].toFixed(1); }
for (const B of [10, 32, 64]) {
  const kh = 5, pT = 2, H = 14, C = 32, O = 64;
  const x = tf.randomUniform([B,H,H,C]), dy = tf.randomUniform([B,H,H,O]);
  const cur = () => tf.engine().runKernel('Conv2DBackpropFilter', {x, dy}, {strides: 1, pad: 'same', dataFormat: 'NHWC', filterShape: [5,5,C,O]});
  const alt = () => {
    const img = tf.transpose(dy, [3,1,2,0]);           // [O, oh, ow, N]
    const filt = tf.transpose(x, [1,2,0,3]);           // [H, W, N, C]
    const P = kh - 1 - pT, Pb = H - H + pT;
    const out = tf.engine().runKernel('Conv2D', {x: img, filter: filt}, {strides: 1, dilations: 1, pad: [[0,0],[P,Pb],[P,Pb],[0,0]], dataFormat: 'NHWC'}); // [O, kh, kw, C]
    return tf.transpose(tf.reverse(out, [1,2]), [1,2,3,0]);
  };
  const a = tf.tidy(() => cur()), b = tf.tidy(() => alt());
  const err = tf.tidy(() => tf.max(tf.abs(a.sub(b))).dataSync()[0] / tf.max(tf.abs(a)).dataSync()[0]);
  console.log(`B=${B} current ${time(() => tf.tidy(() => { cur().dataSync(); }))} alt ${time(() => tf.tidy(() => { alt().dataSync(); }))} relerr ${err.toExponential(1)}`);
}

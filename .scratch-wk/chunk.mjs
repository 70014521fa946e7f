import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
await initBackend('wasm', { log: () => {} });
function time(f, reps = 5) { f(); const ts = []; for (let i = 0; i < reps; i++) { const t0 = performance.now(); f(); ts.push(performance.now() - t0); } ts.sort((a,b)=>a-b); return ts[Math.floor(ts.length/2)].toFixed(1); }
const B = 64;
for (const [xs, fs] of [[[B,28,28,1],[5,5,1,32]], [[B,14,14,32],[5,5,32,64]]]) {
  const x = tf.randomUniform(xs), dy = tf.randomUniform([B, xs[1], xs[2], fs[3]]);
  const dW = (xx, dd) => tf.engine().runKernel('Conv2DBackpropFilter', {x: xx, dy: dd}, {strides: 1, pad: 'same', dataFormat: 'NHWC', filterShape: fs});
  const r = { whole: time(() => tf.tidy(() => { dW(x, dy).dataSync(); })) };
  for (const chunk of [8, 16, 32]) {
    r['chunk' + chunk] = time(() => tf.tidy(() => {
      let acc = null;
      for (let s = 0; s < B; s += chunk) { const g = dW(x.slice([s,0,0,0],[chunk,-1,-1,-1]), dy.slice([s,0,0,0],[chunk,-1,-1,-1])); acc = acc ? acc.add(g) : g; }
      acc.dataSync();
    }));
  }
  console.log(xs.join('x'), JSON.stringify(r));
}

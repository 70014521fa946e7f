import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
import { registerWasmTrainingKernels } from '../dist/core/wasm-kernels.js';

await initBackend('wasm', { log: () => {} });
registerWasmTrainingKernels();
const cases = [
  // [n, h, w, c, kh, kw, o, stride, pad]
  [2, 28, 28, 1, 5, 5, 32, 1, 'same'],
  [3, 14, 14, 32, 5, 5, 64, 1, 'same'],
  [1, 9, 7, 3, 3, 3, 4, 2, 'same'],
  [1, 9, 7, 3, 3, 3, 4, 2, 'valid'],
  [2, 8, 8, 2, 3, 3, 5, 2, 'valid'],
  [2, 10, 11, 1, 4, 3, 2, [2, 3], 'same'],
  [1, 5, 5, 1, 5, 5, 1, 1, 'valid'],
  [2, 7, 6, 3, 2, 2, 3, 1, [[0,0],[1,2],[0,3],[0,0]]],
  [2, 7, 6, 3, 3, 3, 3, 2, [[0,0],[1,2],[0,3],[0,0]]],
];
function rand(shape, seed) { return tf.randomUniform(shape, -1, 1, 'float32', seed); }
for (const [n,h,w,c,kh,kw,o,s,pad] of cases) {
  const out = {};
  for (const be of ['cpu','wasm']) {
    await tf.setBackend(be);
    const x = rand([n,h,w,c], 1); const f = rand([kh,kw,c,o], 2);
    const y = tf.conv2d(x, f, s, pad);
    const dy = rand(y.shape, 3);
    const dw = tf.conv2dBackpropFilter ? null : null;
    const g = tf.grads((xx, ff) => tf.conv2d(xx, ff, s, pad));
    const [dx, df] = g([x, f], dy);
    out[be] = { dx: await dx.data(), df: await df.data(), dfShape: df.shape };
    tf.dispose([x,f,y,dy,dx,df]);
  }
  const rel = (a, b) => { let num=0, den=0; for (let i=0;i<a.length;i++){num=Math.max(num,Math.abs(a[i]-b[i])); den=Math.max(den,Math.abs(b[i]));} return num/den; };
  console.log(JSON.stringify([n,h,w,c,kh,kw,o,s,pad]), 'df', rel(out.wasm.df, out.cpu.df).toExponential(2), 'dx', rel(out.wasm.dx, out.cpu.dx).toExponential(2));
}
await tf.setBackend('wasm');
const be = tf.backend();
const before = [tf.memory().numTensors, be.numDataIds()];
for (let i = 0; i < 3; i++) {
  const x = rand([2,9,7,3],1), f = rand([3,3,3,4],2);
  const g = tf.grads((xx, ff) => tf.conv2d(xx, ff, 2, 'valid'));
  const y = tf.conv2d(x, f, 2, 'valid'); const dy = rand(y.shape, 3);
  const r = g([x,f], dy); tf.dispose([x,f,y,dy,...r]);
}
console.log('leak check tensors/dataIds before', before, 'after', [tf.memory().numTensors, be.numDataIds()]);

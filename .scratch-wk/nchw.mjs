import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
await initBackend('wasm', { log: () => {} });
const out = {};
for (const be of ['cpu', 'wasm']) {
  await tf.setBackend(be);
  const x = tf.randomUniform([2,3,9,7],-1,1,'float32',1), dy = tf.randomUniform([2,4,5,4],-1,1,'float32',2);
  out[be] = tf.engine().runKernel('Conv2DBackpropFilter', {x, dy}, {strides: 2, pad: 'same', dataFormat: 'NCHW', filterShape: [3,3,3,4]}).dataSync();
}
let e=0,m=0; for (let i=0;i<out.cpu.length;i++){e=Math.max(e,Math.abs(out.cpu[i]-out.wasm[i])); m=Math.max(m,Math.abs(out.cpu[i]));} console.log('NCHW relerr', (e/m).toExponential(2));

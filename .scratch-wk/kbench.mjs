import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
import { registerWasmTrainingKernels } from '../dist/core/wasm-kernels.js';
await initBackend('wasm', { log: () => {} });
const origInput = tf.getKernel('Conv2DBackpropInput', 'wasm');
registerWasmTrainingKernels();
const newInput = tf.getKernel('Conv2DBackpropInput', 'wasm');
const B = Number(process.argv[2] ?? 32);
const be = tf.backend();
function time(f, reps = 5) {
  f(); const ts = [];
  for (let i = 0; i < reps; i++) { const t0 = performance.now(); f(); ts.push(performance.now() - t0); }
  ts.sort((a,b)=>a-b); return ts[Math.floor(ts.length/2)];
}
const layers = [['conv1', [B,28,28,1], [5,5,1,32]], ['conv2', [B,14,14,32], [5,5,32,64]]];
for (const [name, xs, fs] of layers) {
  const x = tf.randomUniform(xs), f = tf.randomUniform(fs);
  const y = tf.conv2d(x, f, 1, 'same'); const dy = tf.randomUniform(y.shape);
  const fwd = time(() => tf.tidy(() => tf.conv2d(x, f, 1, 'same').dataSync() && undefined));
  const dW = time(() => tf.tidy(() => tf.conv2dTranspose ? tf.engine().runKernel('Conv2DBackpropFilter', {x, dy}, {strides: 1, pad: 'same', dataFormat: 'NHWC', filterShape: fs}).dataSync() && undefined : 0));
  tf.registerKernel; 
  const runIn = () => tf.tidy(() => tf.engine().runKernel('Conv2DBackpropInput', {dy, filter: f}, {strides: 1, pad: 'same', dataFormat: 'NHWC', inputShape: xs}).dataSync() && undefined);
  const dxNew = time(runIn);
  tf.unregisterKernel('Conv2DBackpropInput', 'wasm'); tf.registerKernel(origInput);
  const dxOld = time(runIn, 3);
  tf.unregisterKernel('Conv2DBackpropInput', 'wasm'); tf.registerKernel(newInput);
  const flops = 2 * xs[0] * xs[1] * xs[2] * fs[0]*fs[1]*fs[2]*fs[3] / 1e9;
  console.log(`B=${B} ${name}: fwd ${fwd.toFixed(1)}ms (${(flops/fwd*1e3).toFixed(1)} GFLOP/s)  dW ${dW.toFixed(1)}ms  dx new ${dxNew.toFixed(1)}ms old ${dxOld.toFixed(1)}ms`);
  tf.dispose([x,f,y,dy]);
}

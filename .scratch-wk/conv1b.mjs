import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
await initBackend('wasm', { log: () => {} });
const B = Number(process.argv[2] ?? 32);
const x = tf.randomUniform([B,28,28,1]), f = tf.randomUniform([5,5,1,32]);
for (let i = 0; i < 4; i++) {
  const t0 = performance.now();
  const y = tf.conv2d(x, f, 1, 'valid');
  const t1 = performance.now();
  y.dataSync();
  const t2 = performance.now();
  y.dispose();
  console.log(`B=${B} kernel ${(t1-t0).toFixed(1)} read ${(t2-t1).toFixed(1)} heap ${tf.backend().wasm.HEAPU8.length/1e6}MB`);
}

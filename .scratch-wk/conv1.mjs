import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
await initBackend('wasm', { log: () => {} });
function time(f, reps = 5) {
  f(); const ts = [];
  for (let i = 0; i < reps; i++) { const t0 = performance.now(); f(); ts.push(performance.now() - t0); }
  ts.sort((a,b)=>a-b); return ts[Math.floor(ts.length/2)].toFixed(1);
}
for (const B of [1, 8, 32]) {
  for (const [C, O] of [[1, 32], [2, 32], [4, 32], [8,32], [32, 64]]) {
    const H = C >= 32 ? 14 : 28;
    const x = tf.randomUniform([B,H,H,C]), f = tf.randomUniform([5,5,C,O]);
    const r = {};
    for (const pad of ['same', 'valid']) r[pad] = time(() => tf.tidy(() => tf.conv2d(x, f, 1, pad).dataSync()));
    r.explicit = time(() => tf.tidy(() => tf.conv2d(x, f, 1, [[0,0],[2,2],[2,2],[0,0]]).dataSync()));
    console.log(`B=${B} ${H}x${H}x${C}->${O}`, JSON.stringify(r));
    tf.dispose([x,f]);
  }
}

import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
const backend = process.argv[2] ?? 'wasm';
const B = Number(process.argv[3] ?? 32);
const useFlags = process.argv[4] === 'flags';
await initBackend(backend, { log: () => {} });
function time(name, fn, iters = 100, reps = 7) {
  for (let i = 0; i < 3; i++) fn(i);
  const wall = [];
  for (let r = 0; r < reps; r++) { const t0 = performance.now(); for (let i = 0; i < iters; i++) fn(i); wall.push((performance.now() - t0) / iters); }
  wall.sort((a, b) => a - b);
  console.log(`${name.padEnd(50)} ${wall[reps >> 1].toFixed(3)} ms  ${(B / wall[reps >> 1] * 1000).toFixed(0)} samples/s`);
}
const mm = (a, b, ta, tb) => useFlags ? tf.matMul(a, b, ta, tb) : tf.matMul(ta ? tf.transpose(a) : a, tb ? tf.transpose(b) : b);
const dims = [784, 200, 200, 10];
const lr = 0.01;
const xb = tf.randomUniform([B, 784]);
const yb = tf.oneHot(tf.randomUniform([B], 0, 10, 'int32'), 10).toFloat();
let Wt = [], bt = [];
for (let l = 0; l < 3; l++) { Wt.push(tf.randomNormal([dims[l + 1], dims[l]], 0, 0.05)); bt.push(tf.zeros([dims[l + 1], 1])); }
const stepB = () => {
  const out = tf.tidy(() => {
    const xT = tf.transpose(xb);
    const actsT = [xT];
    let a = xT;
    for (let l = 0; l < 3; l++) { let z = tf.add(tf.matMul(Wt[l], a), bt[l]); if (l < 2) z = tf.relu(z); a = z; actsT.push(a); }
    const p = tf.softmax(tf.transpose(a)); // [B,C]
    let dzT = tf.transpose(tf.mul(tf.sub(p, yb), lr / B)); // [C,B]
    const nw = [], nb = [];
    for (let l = 2; l >= 0; l--) {
      const dWt = l === 0 ? mm(dzT, xb, false, false) : mm(dzT, actsT[l], false, true);
      const db = tf.sum(dzT, 1, true);
      if (l > 0) { const daT = mm(Wt[l], dzT, true, false); dzT = tf.mul(daT, tf.step(actsT[l])); }
      nw[l] = tf.sub(Wt[l], dWt); nb[l] = tf.sub(bt[l], db);
    }
    return [...nw, ...nb];
  });
  tf.dispose([...Wt, ...bt]); Wt = out.slice(0, 3); bt = out.slice(3);
};
time(`B feature-major ${useFlags ? 'flags' : 'explicit transposes'}`, stepB, backend === 'cpu' ? 10 : 100, 5);

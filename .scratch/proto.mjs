import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
const backend = process.argv[2] ?? 'wasm';
const B = Number(process.argv[3] ?? 32);
await initBackend(backend, { log: () => {} });
function time(name, fn, iters = 100, reps = 7) {
  for (let i = 0; i < 10; i++) fn(i);
  const wall = [];
  for (let r = 0; r < reps; r++) { const t0 = performance.now(); for (let i = 0; i < iters; i++) fn(i); wall.push((performance.now() - t0) / iters); }
  wall.sort((a, b) => a - b);
  console.log(`${name.padEnd(50)} ${wall[reps >> 1].toFixed(3)} ms  ${(B / wall[reps >> 1] * 1000).toFixed(0)} samples/s`);
}
const dims = [784, 200, 200, 10];
const lr = 0.01;
const xb = tf.randomUniform([B, 784]);
const yb = tf.oneHot(tf.randomUniform([B], 0, 10, 'int32'), 10).toFloat();
// variant A: batch-major, W [in,out]
let W = [], bias = [];
for (let l = 0; l < 3; l++) { W.push(tf.randomNormal([dims[l], dims[l + 1]], 0, 0.05)); bias.push(tf.zeros([dims[l + 1]])); }
const stepA = () => {
  const out = tf.tidy(() => {
    const acts = [xb];
    let a = xb;
    for (let l = 0; l < 3; l++) { a = tf.fused.matMul({ a, b: W[l], bias: bias[l], activation: l < 2 ? 'relu' : 'linear' }); acts.push(a); }
    const p = tf.softmax(a);
    let dz = tf.mul(tf.sub(p, yb), lr / B);
    const nw = [], nb = [];
    for (let l = 2; l >= 0; l--) {
      const dW = tf.matMul(tf.transpose(acts[l]), dz);
      const db = tf.sum(dz, 0);
      if (l > 0) { const da = tf.matMul(dz, tf.transpose(W[l])); dz = tf.mul(da, tf.step(acts[l])); }
      nw[l] = tf.sub(W[l], dW); nb[l] = tf.sub(bias[l], db);
    }
    return [...nw, ...nb];
  });
  tf.dispose([...W, ...bias]); W = out.slice(0, 3); bias = out.slice(3);
};
time('A batch-major, transposes explicit', stepA, 100);
// variant A': same but matMul transpose flags (slow path) for comparison skipped
// variant B: feature-major, Wt [out,in]
let Wt = W.map((w) => tf.transpose(w)); let bt = bias.map((b) => b.reshape([-1, 1]));
const xT = tf.transpose(xb); const yT = tf.transpose(yb);
const stepB = () => {
  const out = tf.tidy(() => {
    const actsT = [xT];
    let a = xT;
    for (let l = 0; l < 3; l++) { let z = tf.add(tf.matMul(Wt[l], a), bt[l]); if (l < 2) z = tf.relu(z); a = z; actsT.push(a); }
    const p = tf.softmax(tf.transpose(a)); // [B,C]
    let dzT = tf.transpose(tf.mul(tf.sub(p, yb), lr / B)); // [C,B]
    const nw = [], nb = [];
    for (let l = 2; l >= 0; l--) {
      const A = l === 0 ? xb : tf.transpose(actsT[l]); // [B,in]
      const dWt = tf.matMul(dzT, A); // [out,in]
      const db = tf.sum(dzT, 1, true);
      if (l > 0) { const daT = tf.matMul(tf.transpose(Wt[l]), dzT); dzT = tf.mul(daT, tf.step(actsT[l])); }
      nw[l] = tf.sub(Wt[l], dWt); nb[l] = tf.sub(bt[l], db);
    }
    return [...nw, ...nb];
  });
  tf.dispose([...Wt, ...bt]); Wt = out.slice(0, 3); bt = out.slice(3);
};
time('B feature-major', stepB, 100);
// forward-only comparisons
time('A fwd only', () => tf.tidy(() => { let a = xb; for (let l = 0; l < 3; l++) a = tf.fused.matMul({ a, b: W[l], bias: bias[l], activation: l < 2 ? 'relu' : 'linear' }); return a; }), 200);
time('B fwd only', () => tf.tidy(() => { let a = xT; for (let l = 0; l < 3; l++) { a = tf.add(tf.matMul(Wt[l], a), bt[l]); if (l < 2) a = tf.relu(a); } return a; }), 200);
const p = await tf.profile(() => stepB());
const kt = {}; for (const k of p.kernels) kt[k.name] = [(kt[k.name]?.[0] ?? 0) + 1, (kt[k.name]?.[1] ?? 0) + k.kernelTimeMs];
console.log('B kernels', p.kernels.length, JSON.stringify(Object.fromEntries(Object.entries(kt).map(([k, v]) => [k, [v[0], +v[1].toFixed(3)]]))));
console.log(p.kernels.filter(k=>k.name==='BatchMatMul').map(k=>JSON.stringify(k.inputShapes)+' '+k.kernelTimeMs.toFixed(3)).join('\n'));
const pa = await tf.profile(() => stepA());
const ka = {}; for (const k of pa.kernels) ka[k.name] = [(ka[k.name]?.[0] ?? 0) + 1, (ka[k.name]?.[1] ?? 0) + k.kernelTimeMs];
console.log('A kernels', pa.kernels.length, JSON.stringify(Object.fromEntries(Object.entries(ka).map(([k, v]) => [k, [v[0], +v[1].toFixed(3)]]))));
console.log(pa.kernels.filter(k=>/MatMul/.test(k.name)).map(k=>k.name+JSON.stringify(k.inputShapes)+' '+k.kernelTimeMs.toFixed(3)).join('\n'));

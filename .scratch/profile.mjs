import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
import { initialWeights, withModel, setFlatWeights, crossEntropy, countCorrect } from '../dist/core/model.js';
import { modelSpec } from '../dist/core/model-zoo.js';
const backend = process.argv[2] ?? 'wasm';
const B = Number(process.argv[3] ?? 32);
await initBackend(backend, { log: () => {} });
const spec = modelSpec('2nn', { featureShape: [28, 28, 1], numClasses: 10 });
const n = 2048, d = 784, C = 10;
const features = new Float32Array(n * d); for (let i = 0; i < features.length; i++) features[i] = Math.random();
const labels = new Uint8Array(n); for (let i = 0; i < n; i++) labels[i] = Math.floor(Math.random() * 10);

// time fn: returns median ms per call over `reps` rounds of `iters` calls; also cpu ms
function time(name, fn, iters = 100, reps = 7) {
  for (let i = 0; i < 10; i++) fn(i);
  const wall = [], cpu = [];
  for (let r = 0; r < reps; r++) {
    const c0 = process.cpuUsage(); const t0 = performance.now();
    for (let i = 0; i < iters; i++) fn(i);
    const t1 = performance.now(); const c1 = process.cpuUsage(c0);
    wall.push((t1 - t0) / iters); cpu.push((c1.user + c1.system) / 1000 / iters);
  }
  wall.sort((a, b) => a - b); cpu.sort((a, b) => a - b);
  console.log(`${name.padEnd(58)} wall ${wall[reps >> 1].toFixed(3)} ms  cpu ${cpu[reps >> 1].toFixed(3)} ms`);
  return wall[reps >> 1];
}

const xBuf = new Float32Array(B * d), yBuf = new Float32Array(B * C);
const order = new Uint32Array(n); for (let i = 0; i < n; i++) order[i] = i;
const assemble = (it) => {
  const start = (it * B) % (n - B);
  yBuf.fill(0);
  for (let i = 0; i < B; i++) { const row = order[start + i]; xBuf.set(features.subarray(row * d, row * d + d), i * d); yBuf[i * C + labels[row]] = 1; }
};
console.log(`backend ${tf.getBackend()} batch ${B}`);
time('JS batch assembly', assemble, 1000);
time('tensor create+dispose x,y (upload)', () => { const x = tf.tensor(xBuf, [B, 28, 28, 1]); const y = tf.tensor2d(yBuf, [B, C]); x.dispose(); y.dispose(); }, 1000);
time('tf.add of two scalars (dispatch overhead, 1 kernel)', () => { const a = tf.scalar(1); const b = tf.add(a, a); a.dispose(); b.dispose(); }, 1000);

await withModel(spec, async (model) => {
  setFlatWeights(model, initialWeights(spec, 1));
  const vars = model.trainableWeights.map((w) => w.read());
  const opt = tf.train.sgd(0.01);
  const x = tf.tensor(xBuf, [B, 28, 28, 1]); const y = tf.tensor2d(yBuf, [B, C]);
  // full step as in trainLocally
  let lossSum, correctSum;
  const step = () => {
    let correct;
    const cost = opt.minimize(() => { const out = model.apply(x, { training: true }); correct = tf.keep(countCorrect(out, y)); return crossEntropy(out, y, false, 'mean'); }, true, vars);
    const pl = lossSum, pc = correctSum;
    lossSum = tf.tidy(() => { const bl = tf.mul(cost, B); return pl ? tf.add(pl, bl) : bl; });
    correctSum = tf.tidy(() => pc ? tf.add(pc, correct) : tf.clone(correct));
    tf.dispose([cost, correct]); tf.dispose([pl, pc].filter(Boolean));
  };
  const tStep = time('FULL step (minimize + metrics), data fixed', step, 50);
  const prof = await tf.profile(() => { step(); });
  const counts = {}; for (const k of prof.kernels) counts[k.name] = (counts[k.name] ?? 0) + 1;
  console.log(`kernels per step: ${prof.kernels.length}`, JSON.stringify(counts));
  const kt = {}; for (const k of prof.kernels) kt[k.name] = (kt[k.name] ?? 0) + (typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0);
  console.log('kernel time by name (ms, tf.profile, sync):', JSON.stringify(Object.fromEntries(Object.entries(kt).map(([k, v]) => [k, +v.toFixed(3)]).sort((a, b) => b[1] - a[1]))));
  console.log('matmul kernels detail:', prof.kernels.filter(k => /MatMul/.test(k.name)).map(k => `${k.name}${JSON.stringify(k.inputShapes)} ${typeof k.kernelTimeMs==='number'?k.kernelTimeMs.toFixed(3):'?'}ms`).join('\n  '));
  time('forward only: model.apply (tidy)', () => tf.tidy(() => model.apply(x, { training: true })), 100);
  time('forward + loss (tidy), no grad', () => tf.tidy(() => crossEntropy(model.apply(x, { training: true }), y, false, 'mean')), 100);
  time('countCorrect (tidy)', () => tf.tidy(() => countCorrect(tf.zeros([B, C]), y)), 200);
  time('variableGrads(fwd+loss) - tape+backward, no update', () => { const { value, grads } = tf.variableGrads(() => crossEntropy(model.apply(x, { training: true }), y, false, 'mean'), vars); value.dispose(); tf.dispose(Object.values(grads)); }, 50);
  const grads = vars.map((v) => tf.zerosLike(v));
  time('optimizer.applyGradients (6 vars)', () => opt.applyGradients(vars.map((v, i) => ({ name: v.name, tensor: grads[i] }))), 200);
  tf.dispose(grads);
  time('metric accumulation (2 tidy adds)', () => { const c = tf.scalar(1); const pl = lossSum, pc = correctSum; lossSum = tf.tidy(() => tf.add(pl, tf.mul(c, B))); correctSum = tf.tidy(() => tf.add(pc, c)); tf.dispose([pl, pc, c]); }, 500);
  // bare matmuls
  const mk = (s) => tf.randomNormal(s);
  const x2 = mk([B, 784]), h = mk([B, 200]), o = mk([B, 10]);
  const W1 = mk([784, 200]), W2 = mk([200, 200]), W3 = mk([200, 10]);
  const b1 = mk([200]), b2 = mk([200]), b3 = mk([10]);
  let totalFwd = 0, totalBwd = 0;
  totalFwd += time('matMul x[B,784]·W1 (no transpose: XNNPACK?)', () => tf.matMul(x2, W1).dispose(), 200);
  totalFwd += time('matMul h·W2', () => tf.matMul(h, W2).dispose(), 200);
  totalFwd += time('matMul h·W3', () => tf.matMul(h, W3).dispose(), 200);
  time('fused.matMul x·W1 + b1, relu', () => tf.fused.matMul({ a: x2, b: W1, bias: b1, activation: 'relu' }).dispose(), 200);
  time('matMul x·W1 with W1 NEW each call (packing cost)', () => { const w = tf.clone(W1); tf.matMul(x2, w).dispose(); w.dispose(); }, 200);
  time('  clone W1 alone', () => { const w = tf.clone(W1); w.dispose(); }, 200);
  totalBwd += time('matMul dH1[B,200]·W1^T transposeB (dX, layer1 - not needed)', () => tf.matMul(h, W1, false, true).dispose(), 50);
  totalBwd += time('matMul x^T·dH1 transposeA  (dW1)', () => tf.matMul(x2, h, true, false).dispose(), 50);
  totalBwd += time('matMul h^T·dH2 transposeA  (dW2)', () => tf.matMul(h, h, true, false).dispose(), 100);
  totalBwd += time('matMul dH2·W2^T transposeB  (dH1)', () => tf.matMul(h, W2, false, true).dispose(), 100);
  totalBwd += time('matMul h^T·dO transposeA  (dW3)', () => tf.matMul(h, o, true, false).dispose(), 100);
  totalBwd += time('matMul dO·W3^T transposeB  (dH2)', () => tf.matMul(o, W3, false, true).dispose(), 100);
  time('transpose x[B,784]', () => tf.transpose(x2).dispose(), 200);
  time('transpose W1[784,200]', () => tf.transpose(W1).dispose(), 200);
  time('transpose then matMul x^T·dH1 (dW1 via XNNPACK)', () => tf.tidy(() => tf.matMul(tf.transpose(x2), h)), 100);
  time('transpose W2 then matMul dH2·W2^T', () => tf.tidy(() => tf.matMul(h, tf.transpose(W2))), 100);
  const flops = 2 * B * (784 * 200 + 200 * 200 + 200 * 10);
  console.log(`fwd matmuls ${totalFwd.toFixed(3)} ms (${(flops / totalFwd / 1e6).toFixed(1)} GFLOP/s), transposed bwd matmuls (incl. unneeded dX1) ${totalBwd.toFixed(3)} ms`);
  console.log(`step total ${tStep.toFixed(3)} ms = ${(B / tStep * 1000).toFixed(0)} samples/s`);
});

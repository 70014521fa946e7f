import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
await initBackend('wasm', { log: () => {} });
const rel = (a, b) => { let num=0, den=0; for (let i=0;i<a.length;i++){num=Math.max(num,Math.abs(a[i]-b[i])); den=Math.max(den,Math.abs(b[i]));} return num/(den||1); };
async function both(f) { const out = {}; for (const be of ['cpu','wasm']) { await tf.setBackend(be); const t = f(); out[be] = { v: await t.data(), s: t.shape }; t.dispose(); } return out; }
for (const [ash, bsh, ta, tb] of [[[32,3136],[32,512],true,false],[[32,512],[3136,512],false,true],[[5,7],[9,5],true,true],[[1,7,5],[1,7,3],true,false],[[1,4,7],[1,9,7],false,true],[[2,4,7],[2,9,7],false,true],[[3,1],[3,1],true,false],[[1,3],[1,3],false,true]]) {
  const o = await both(() => tf.matMul(tf.randomUniform(ash,-1,1,'float32',1), tf.randomUniform(bsh,-1,1,'float32',2), ta, tb));
  console.log('matmul', JSON.stringify([ash,bsh,ta,tb]), o.wasm.s.join('x'), o.cpu.s.join('x'), rel(o.wasm.v, o.cpu.v).toExponential(2));
}
for (const [xs, f, s, pad] of [[[2,28,28,32],2,2,'valid'],[[1,7,9,3],3,2,'same'],[[2,7,9,3],3,1,'same'],[[1,5,5,2],2,1,'valid'],[[2,9,8,1],[3,2],[2,3],'same']]) {
  for (const ints of [false, true]) {
    const o = await both(() => {
      let x = tf.randomUniform(xs, -1, 1, 'float32', 3); if (ints) x = tf.round(tf.mul(x, 2));
      return tf.grad((xx) => tf.maxPool(xx, f, s, pad).mul(tf.randomUniform(tf.maxPool(xx, f, s, pad).shape, -1, 1, 'float32', 4)).sum())(x);
    });
    console.log('maxPoolGrad', JSON.stringify([xs,f,s,pad,ints?'ties':'']), rel(o.wasm.v, o.cpu.v).toExponential(2));
  }
}
await tf.setBackend('wasm');
const be = tf.backend(); const before = [tf.memory().numTensors, be.numDataIds()];
for (const [ash, bsh, ta, tb] of [[[32,64],[32,16],true,false],[[32,16],[64,16],false,true],[[5,7],[9,5],true,true]]) tf.tidy(() => { tf.matMul(tf.ones(ash), tf.ones(bsh), ta, tb).dataSync(); });
tf.tidy(() => { tf.grad((xx) => tf.maxPool(xx, 2, 2, 'valid').sum())(tf.ones([2,4,4,3])).dataSync(); });
console.log('leak', before, [tf.memory().numTensors, be.numDataIds()]);

import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dist/core/backend.js';
await initBackend('wasm', { log: () => {} });
const xs = new Float32Array(32*784).map(()=>Math.random()-0.5), hs = new Float32Array(32*200).map(()=>Math.random()-0.5);
const r = (await tf.matMul(tf.tensor2d(xs,[32,784]), tf.tensor2d(hs,[32,200]), true, false).data());
const r2 = (await tf.matMul(tf.transpose(tf.tensor2d(xs,[32,784])), tf.tensor2d(hs,[32,200])).data());
let m = 0; for (let i = 0; i < r.length; i++) m = Math.max(m, Math.abs(r[i]-r2[i]));
console.log('max diff slow vs xnn', m);

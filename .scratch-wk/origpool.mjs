import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
await tf.setBackend('wasm');
const x = tf.tensor4d([-1, -2, -3, -0.5,  0.5, 0.5, 0, 0], [2, 2, 2, 1]);
const g = tf.grad((xx) => tf.maxPool(xx, 2, 2, 'valid').sum())(x);
console.log('wasm', JSON.stringify(Array.from(await g.data())));
await tf.setBackend('cpu');
const g2 = tf.grad((xx) => tf.maxPool(xx, 2, 2, 'valid').sum())(tf.tensor4d([-1, -2, -3, -0.5,  0.5, 0.5, 0, 0], [2, 2, 2, 1]));
console.log('cpu ', JSON.stringify(Array.from(await g2.data())));

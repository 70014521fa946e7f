import * as tf from '@tensorflow/tfjs';
import * as wasm from '@tensorflow/tfjs-backend-wasm';
tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
wasm.setThreadsCount(2);
const t = setTimeout(() => { console.log('timeout: backend did not initialise in 20 s'); process.exit(2); }, 20000);
try {
  const ok = await tf.setBackend('wasm');
  console.log('setBackend ->', ok, 'threads', ok ? wasm.getThreadsCount() : '-');
} catch (e) { console.log('error', String(e).split('\n')[0]); }
clearTimeout(t); process.exit(0);

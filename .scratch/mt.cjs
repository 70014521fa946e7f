// Proof of concept: the threaded-SIMD wasm build under Node with worker_threads.
const fs = require('fs'), os = require('os'), path = require('path');
const tf = require('@tensorflow/tfjs');
const wasmPkg = require('@tensorflow/tfjs-backend-wasm');
const out = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/wasm-out/tfjs-backend-wasm-threaded-simd.js'));
const factory = require(path.join(out, 'tfjs-backend-wasm-threaded-simd.js'));
const { wasmWorkerContents } = require(path.join(out, 'tfjs-backend-wasm-threaded-simd.worker.js'));
async function initThreaded(threads) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-wasm-mt-'));
  const workerPath = path.join(dir, 'worker.cjs');
  fs.writeFileSync(workerPath, wasmWorkerContents.replace(/\n/g, '\\n'));
  // The C++ side caps threads at os.cpus().length / 2 (it assumes hyperthreads).
  const realCpus = os.cpus;
  os.cpus = () => { const c = realCpus(); return [...c, ...c]; };
  try {
  const module = await factory({
    locateFile: (p, prefix) => p.endsWith('.worker.js') ? workerPath : p.endsWith('.wasm') ? path.join(out, 'tfjs-backend-wasm-threaded-simd.wasm') : prefix + p,
    mainScriptUrlOrBlob: path.join(out, 'tfjs-backend-wasm-threaded-simd.js'),
  });
  module.tfjs = {
    init: module.cwrap('init', null, []),
    initWithThreadsCount: module.cwrap('init_with_threads_count', null, ['number']),
    getThreadsCount: module.cwrap('get_threads_count', 'number', []),
    registerTensor: module.cwrap('register_tensor', null, ['number', 'number', 'number']),
    disposeData: module.cwrap('dispose_data', null, ['number']),
    dispose: module.cwrap('dispose', null, []),
  };
  wasmPkg.setThreadsCount(threads);
  tf.removeBackend('wasm');
  tf.registerBackend('wasm', () => new wasmPkg.BackendWasm(module), 2);
  await tf.setBackend('wasm');
  return module;
  } finally { os.cpus = realCpus; }
}
module.exports = { initThreaded };
if (require.main === module) {
  (async () => {
    const threads = Number(process.argv[2] ?? 2);
    const t0 = performance.now();
    await initThreaded(threads);
    console.log('backend', tf.getBackend(), 'threads', wasmPkg.getThreadsCount(), 'init ms', (performance.now() - t0).toFixed(0));
    const a = tf.randomNormal([200, 784]), b = tf.randomNormal([784, 32]);
    const c = tf.matMul(a, b);
    const ref = await tf.tidy(() => tf.matMul(a, b)).data();
    console.log('ok', (await c.data())[0], ref[0]);
    for (const [M, K, N] of [[200, 784, 32], [200, 32, 784], [200, 200, 32], [200,784,64]]) {
      const x = tf.randomNormal([M, K]), y = tf.randomNormal([K, N]);
      for (let i = 0; i < 20; i++) tf.matMul(x, y).dispose();
      const ts = [];
      for (let r = 0; r < 7; r++) { const t = performance.now(); for (let i = 0; i < 100; i++) tf.matMul(x, y).dispose(); ts.push((performance.now() - t) / 100); }
      ts.sort((p, q) => p - q);
      console.log(`[${M},${K}]x[${K},${N}] cached b: ${(ts[3] * 1000).toFixed(1)} us`);
    }
    process.exit(0);
  })().catch((e) => { console.error('FAILED', e); process.exit(1); });
}

// A worker thread of data-parallel local training (trainer/training/data-parallel.ts):
// builds a replica for each run the calling thread begins, serves its steps,
// and frees it when the run ends.
import { parentPort } from 'node:worker_threads';
import { initBackend } from '../../core/backend.js';
import type { BackendPreference } from '../../core/backend.js';
import { setFlatWeights, withModel } from '../../core/model/build.js';
import { serveSteps, type BeginMessage, type WorkerMessage } from './data-parallel.js';
import { DenseTrainer, densePlan } from './dense-step.js';
import { DenseReplica, GenericReplica } from './replicas.js';

const port = parentPort;
if (!port) throw new Error('trainer/training/training-worker.js runs as a worker thread of data-parallel training');

function reply(message: WorkerMessage): void {
  port!.postMessage(message);
}

async function run(begin: BeginMessage): Promise<void> {
  const { setup, weights, channel } = begin;
  await initBackend(begin.backend as BackendPreference, { log: () => {} });
  if (setup.path === 'dense') {
    const plan = densePlan(setup.spec);
    if (!plan) throw new Error(`model ${setup.spec.name} is not a stack of Dense layers`);
    const trainer = new DenseTrainer(plan, weights, setup.learningRate, setup.proximalMu);
    try {
      reply({ kind: 'ready' });
      serveSteps(channel, new DenseReplica(setup, trainer));
    } finally {
      trainer.dispose();
    }
    return;
  }
  await withModel(setup.spec, async (model) => {
    setFlatWeights(model, weights);
    const replica = new GenericReplica(setup, model);
    try {
      reply({ kind: 'ready' });
      serveSteps(channel, replica);
    } finally {
      replica.dispose();
    }
  });
}

port.on('message', (begin: BeginMessage) => {
  run(begin).then(
    () => reply({ kind: 'ended' }),
    (err: unknown) => reply({ kind: 'failed', message: err instanceof Error ? err.message : String(err) }),
  );
});

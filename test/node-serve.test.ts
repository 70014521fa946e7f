// `crowdfl node --serve PORT`: a node operator serves the newest global model
// its node received, over the same REST API as `crowdfl serve`.
import { join } from 'node:path';
import test from 'ava';
import { startAggregator } from '../aggregator/aggregator.js';
import { generateIdentity } from '../core/signing/keys.js';
import { federatedData } from '../datasets/index.js';
import { writeLocalData } from '../datasets/local-dir.js';
import { freePort, spawnCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';

test('a node started with --serve answers predictions from the global model it trained on', async (t) => {
  const experiment = tinyExperiment({ nodes: 1, rounds: 3, selection: { nodes_per_round: 1, min_updates: 1, deadline_seconds: 30 } });
  const data = await federatedData(experiment.dataset, 1, experiment.seed);
  const dir = tempDir('node-serve');
  writeLocalData(join(dir, 'data'), data.partitions[0]!);
  const agg = await startAggregator({ experiment, runDir: join(dir, 'run'), runId: 'ns', test: data.test, identity: generateIdentity() });
  const port = await freePort();
  const node = spawnCli(['node', '--aggregator', `127.0.0.1:${agg.port}`, '--data', join(dir, 'data'), '--state-dir', join(dir, 'state'), '--serve', String(port)]);
  try {
    const end = Date.now() + 60_000;
    while (!/serving the global model of round 2/.test(node.output()) && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    t.regex(node.output(), /serving the global model of round 2/);
    const status = (await (await fetch(`http://127.0.0.1:${port}/v1/models/global`)).json()) as { model_version_status: { version: string; state: string }[] };
    t.is(status.model_version_status[0]!.state, 'AVAILABLE');
    t.true(Number(status.model_version_status[0]!.version) >= 2);
    const instance = Array.from(data.test.features.subarray(0, 60));
    const reply = await fetch(`http://127.0.0.1:${port}/v1/models/global:predict`, { method: 'POST', body: JSON.stringify({ instances: [instance] }) });
    t.is(reply.status, 200);
    const { predictions } = (await reply.json()) as { predictions: number[][] };
    t.is(predictions[0]!.length, 10);
    t.true(Math.abs(predictions[0]!.reduce((a, b) => a + b, 0) - 1) < 1e-4, 'class probabilities');
  } finally {
    node.kill('SIGKILL');
    await agg.stop();
  }
});

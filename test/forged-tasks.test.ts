// A node trusts only tasks its pinned aggregator signed for it. A fake
// aggregator speaking the same proto (and presenting the pinned key, as a
// man in the middle replaying the real key would) sends a real node process
// a task signed by another key and a correctly signed task addressed to
// another node: the node must decline both as refused, download nothing and
// upload nothing. A genuine task then shows the node does download what it
// should, so the counts above are not zero for want of trying.
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import test from 'ava';
import { loadProto, PROTOCOL_VERSION } from '../core/proto.js';
import { modelSpec } from '../core/model/zoo.js';
import { sign } from '../core/signing/ed25519.js';
import { generateIdentity, nodeIdFromPublicKey, publicKeyToString, type Identity } from '../core/signing/keys.js';
import { modelJsonSha256, taskDigest } from '../core/signing/layouts.js';
import { federatedData } from '../datasets/index.js';
import { writeLocalData } from '../datasets/local-dir.js';
import type { AggregatorHandlers } from '../proto/generated/crowdfl/v1/Aggregator.js';
import type { Task } from '../proto/generated/crowdfl/v1/Task.js';
import { spawnCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';

function signedTask(signer: Identity, nodeId: string, modelJson: string): Task {
  const training = { epochs: 1, batch_size: 16, learning_rate: 0.1, seed: 7, proximal_mu: 0 };
  const fields = {
    experiment_id: 'fake', round: 1, task_id: randomUUID(), base_model_sha256: 'a'.repeat(64),
    training, deadline_unix_ms: Date.now() + 600_000, node_id: nodeId,
  };
  const digest = taskDigest({ ...fields, model_json_sha256: modelJsonSha256(modelJson) });
  return { ...fields, model_json: modelJson, signature: Buffer.from(sign(digest, signer)) };
}

test('a real node refuses forged and foreign tasks from a fake aggregator: it declines them, downloads nothing and uploads nothing', async (t) => {
  const pinned = generateIdentity();
  const forger = generateIdentity();
  const experiment = tinyExperiment();
  const data = await federatedData(experiment.dataset, experiment.nodes, experiment.seed);
  const partition = data.partitions[0]!;
  const modelJson = JSON.stringify(modelSpec('logreg', { featureShape: partition.featureShape, numClasses: partition.numClasses }).topology);

  const declines: { kind: string; reason: string; taskId: string }[] = [];
  const downloads: string[] = [];
  let uploads = 0;
  let nodeId = '';
  let genuineTaskId = '';
  let onDecline: () => void = () => {};
  let onDownload: () => void = () => {};
  const queue: Task[] = [];
  let finished = false;
  const handlers: Partial<AggregatorHandlers> = {
    HelloChallenge: (_call, cb) => cb(null, { challenge: randomBytes(32), expires_unix_ms: Date.now() + 60_000 }),
    Hello: (call, cb) => {
      nodeId = nodeIdFromPublicKey(new Uint8Array(call.request.node_public_key));
      // The node's own id, signed by another key; then one correctly signed, for another node; then a genuine one.
      queue.push(signedTask(forger, nodeId, modelJson), signedTask(pinned, 'n-someone-else', modelJson));
      cb(null, {
        protocol_version: PROTOCOL_VERSION, session_id: 's-1', experiment_id: 'fake', heartbeat_interval_ms: 1000,
        max_chunk_bytes: 1 << 20, aggregator_public_key: Buffer.from(pinned.publicKey),
      });
    },
    PollTask: (_call, cb) => {
      const task = queue.shift();
      if (task) cb(null, { task, retry_after_ms: 10 });
      else setTimeout(() => cb(null, { retry_after_ms: 10, experiment_finished: finished }), 50);
    },
    DeclineTask: (call, cb) => {
      declines.push({ kind: String(call.request.kind), reason: call.request.reason, taskId: call.request.task_id });
      cb(null, { retry_after_ms: 10 });
      onDecline();
    },
    DownloadModel: (call) => {
      downloads.push(call.request.model_sha256);
      call.emit('error', { code: grpc.status.NOT_FOUND, details: 'this fake serves no models' });
      onDownload();
    },
    SubmitUpdate: (_call, cb) => {
      uploads++;
      cb({ code: grpc.status.PERMISSION_DENIED, details: 'fake' });
      onDownload();
    },
    Heartbeat: (_call, cb) => cb(null, { task_still_wanted: true }),
    Goodbye: (_call, cb) => cb(null, {}),
  };
  const server = new grpc.Server();
  server.addService(loadProto().crowdfl.v1.Aggregator.service, handlers as grpc.UntypedServiceImplementation);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const dir = tempDir('forged');
  writeLocalData(join(dir, 'data'), partition);
  const node = spawnCli([
    'node', '--aggregator', `127.0.0.1:${port}`, '--data', join(dir, 'data'), '--state-dir', join(dir, 'state'),
    '--aggregator-key', publicKeyToString(pinned.publicKey), '--exit-when-finished',
  ]);
  try {
    // Until both bad tasks are answered, or the node fetches or sends anything (which fails the test at once).
    await new Promise<void>((resolve) => {
      onDecline = () => declines.length >= 2 && resolve();
      onDownload = resolve;
    });
    t.deepEqual(downloads, [], 'nothing was downloaded for a refused task');
    t.deepEqual(declines.map((d) => d.kind), ['REFUSED', 'REFUSED'], node.output());
    t.regex(declines[0]!.reason, /^refused the task: its signature does not verify under the pinned aggregator's key$/);
    t.regex(declines[1]!.reason, /^refused the task: it is addressed to n-someone-else, not to this node$/);
    t.is(uploads, 0, 'nothing was uploaded');

    // The control: a task the pinned key signed for this node is one the node fetches the model of.
    const genuine = signedTask(pinned, nodeId, modelJson);
    genuineTaskId = genuine.task_id!;
    const downloaded = new Promise<void>((resolve) => (onDownload = resolve));
    queue.push(genuine);
    await downloaded;
    t.deepEqual(downloads, ['a'.repeat(64)]);
    t.false(declines.some((d) => d.taskId === genuineTaskId && d.kind === 'REFUSED'));
    t.is(uploads, 0);
  } finally {
    finished = true;
    node.kill('SIGTERM');
    server.forceShutdown();
  }
});

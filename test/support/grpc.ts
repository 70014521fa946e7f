// What the gRPC tests share: a test node's capabilities, joining as a fresh
// identity, waiting for a task, and reading a call's outcome as a status.
import * as grpc from '@grpc/grpc-js';
import { generateIdentity, nodeIdFromPublicKey, type Identity } from '../../core/signing/keys.js';
import type { Task__Output } from '../../proto/generated/crowdfl/v1/Task.js';
import { AggregatorConnection } from '../../trainer/client.js';
import { weightManifest } from '../../core/model/spec.js';
import { parseModelJson } from '../../core/model/zoo.js';

/** A node with 100 synthetic examples (tinyExperiment's data shape). */
export const caps = { backends: ['cpu'], cores: 1, memory_bytes: 1, num_examples: 100, feature_shape: [60], num_classes: 10 };

export function statusOf(p: Promise<unknown>): Promise<{ code: number; details: string }> {
  return p.then(
    () => ({ code: grpc.status.OK, details: '' }),
    (err: grpc.ServiceError) => ({ code: err.code, details: err.details }),
  );
}

/** Says hello as `identity` (a fresh one by default). */
export async function joinAs(
  address: string,
  identity: Identity = generateIdentity(),
  opts: { pinned?: Uint8Array; invitation?: string; credentials?: grpc.ChannelCredentials } = {},
): Promise<{ conn: AggregatorConnection; identity: Identity }> {
  const conn = new AggregatorConnection(address, opts.credentials);
  await conn.hello(identity, nodeIdFromPublicKey(identity.publicKey), caps, 'test', opts.pinned, opts.invitation);
  return { conn, identity };
}

export async function nextTask(conn: AggregatorConnection): Promise<Task__Output> {
  for (;;) {
    const reply = await conn.pollTask(5000);
    if (reply.task) return reply.task;
  }
}

/** Submits a small, valid, signed update for `task` (every weight moved by 1e-3), as an honest node would. */
export function submitSmallUpdate(node: { conn: AggregatorConnection; identity: Identity }, task: Task__Output): Promise<string> {
  const manifest = weightManifest(parseModelJson(task.model_json));
  const n = manifest.reduce((sum, m) => sum + m.shape.reduce((x, y) => x * y, 1), 0);
  return node.conn.submitUpdate(
    {
      taskId: task.task_id, experimentId: task.experiment_id, round: task.round, baseModelSha256: task.base_model_sha256, numExamples: 50,
      metrics: { loss: 1, accuracy: 0.5, train_seconds: 0.1, examples_per_second: 500, epochs_completed: 1, partial: false },
      manifest, delta: new Float32Array(n).fill(1e-3),
    },
    node.identity,
  );
}

import { modelJsonSha256, taskDigest, verify } from '../core/signing.js';
import type { Task__Output } from '../proto/generated/crowdfl/v1/Task.js';

/** Is this task really from the pinned aggregator, and for this node? */
export function taskProblem(task: Task__Output, nodeId: string, aggregatorKey: Uint8Array): string | undefined {
  if (task.node_id !== nodeId) return `it is addressed to ${task.node_id}, not to this node`;
  if (!task.signature || task.signature.length !== 64) return 'it is unsigned';
  const t = task.training;
  if (!t) return 'it has no training configuration';
  const digest = taskDigest({
    experiment_id: task.experiment_id,
    round: task.round,
    task_id: task.task_id,
    base_model_sha256: task.base_model_sha256,
    model_json_sha256: modelJsonSha256(task.model_json),
    training: { epochs: t.epochs, batch_size: t.batch_size, learning_rate: t.learning_rate, seed: t.seed },
    deadline_unix_ms: Number(task.deadline_unix_ms),
    node_id: task.node_id,
  });
  if (!verify(digest, task.signature, aggregatorKey)) return "its signature does not verify under the pinned aggregator's key";
  return undefined;
}


import { verify } from '../core/signing/ed25519.js';
import { modelJsonSha256, taskDigest } from '../core/signing/layouts.js';
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
    training: { epochs: t.epochs, batch_size: t.batch_size, learning_rate: t.learning_rate, seed: t.seed, proximal_mu: t.proximal_mu },
    deadline_unix_ms: Number(task.deadline_unix_ms),
    node_id: task.node_id,
  });
  if (!verify(digest, task.signature, aggregatorKey)) return "its signature does not verify under the pinned aggregator's key";
  return undefined;
}


export interface TimeBudget {
  /** When the update must be uploaded by, minus the time the upload itself needs (epoch ms). */
  trainUntil: number;
  now: number;
  /** This node's training speed on earlier tasks; unknown before its first task. */
  examplesPerSecond: number | undefined;
  localExamples: number;
  /** Less than this share of one epoch is not worth sending (the aggregator would weigh it by its few examples anyway). */
  minEpochFraction: number;
}

/**
 * Why this node should decline a task for lack of time, or undefined when it
 * should try. A slow node with some time submits a partial update with its
 * true example count; one that could not even do `minEpochFraction` of an
 * epoch says so at once, which frees its slot instead of holding the round.
 */
export function tooSlowForDeadline(b: TimeBudget): string | undefined {
  if (!b.examplesPerSecond || !(b.examplesPerSecond > 0)) return undefined;
  const secondsLeft = (b.trainUntil - b.now) / 1000;
  const needed = (b.minEpochFraction * b.localExamples) / b.examplesPerSecond;
  if (secondsLeft >= needed) return undefined;
  return (
    `too slow for the deadline: ${Math.max(0, secondsLeft).toFixed(1)} s left, and ${(100 * b.minEpochFraction).toFixed(0)}% of an epoch ` +
    `(${Math.ceil(b.minEpochFraction * b.localExamples)} examples) takes ~${needed.toFixed(1)} s at this node's ${Math.round(b.examplesPerSecond)} examples/s`
  );
}

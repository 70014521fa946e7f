// What became of one task, as its node asks (GetTaskOutcome): the verdict on
// its update and the signed record of the round the update went into. The
// node keeps both in its contribution ledger and checks the record's
// signature itself, so credit rests on the aggregator's signature, not on
// this answer.
import { status } from '@grpc/grpc-js';
import type { TaskOutcomeReply } from '../proto/generated/crowdfl/v1/TaskOutcomeReply.js';
import { notFound, RpcError } from './rpc-error.js';
import type { RunStore } from './store/run-store.js';

export function taskOutcome(
  store: RunStore,
  runId: string,
  nodeId: string,
  taskId: string,
  pending: (taskId: string) => boolean,
): TaskOutcomeReply {
  const task = store.task(taskId);
  if (!task || task.runId !== runId) throw notFound(`unknown task ${JSON.stringify(taskId)} in run ${runId}`);
  if (task.nodeId !== nodeId) throw new RpcError(status.PERMISSION_DENIED, `task ${taskId} was not assigned to this node`);
  const update = store.updateOfTask(taskId);
  if (!update) {
    if (task.declinedAt !== null) return { verdict: 'declined', reason: task.declineReason ?? '', round: task.round };
    if (pending(taskId)) return { verdict: 'pending', round: task.round };
    return { verdict: 'missing', reason: `no update from this task went into a committed round`, round: task.round };
  }
  const round = store.committedRound(runId, update.round);
  return {
    verdict: update.verdict,
    reason: update.reason,
    weight: update.weight,
    update_digest: update.updateDigest,
    round: update.round,
    record: round && {
      experiment_id: runId,
      round: round.round,
      previous_model_sha256: round.previousModelSha256,
      model_sha256: round.modelSha256,
      accepted: store.creditedUpdates(runId, round.round).map((u) => ({
        task_id: u.task_id,
        update_digest: u.update_digest_hex,
        signature: u.signature_b64,
      })),
      aggregator_signature: round.aggregatorSignature,
    },
  };
}

// What became of one task, as its node asks (GetTaskOutcome): the verdict on
// its update and the signed record of the round the update went into. The
// node keeps both in its contribution ledger and checks the record's
// signature itself, so credit rests on the aggregator's signature, not on
// this answer.
import { status } from '@grpc/grpc-js';
import type { RoundRecord } from '../../proto/generated/crowdfl/v1/RoundRecord.js';
import type { TaskOutcomeReply } from '../../proto/generated/crowdfl/v1/TaskOutcomeReply.js';
import { echo, notFound, RpcError } from '../rpc-error.js';
import type { RunStore } from '../store/run-store.js';

/** Committed rounds whose records are kept: every node of a round asks about the same one right after it commits. */
const RECORDS_KEPT = 16;

export class TaskOutcomes {
  /** A committed round's record never changes, so it is read from the database once, not once per asking node. */
  private readonly records = new Map<number, RoundRecord>();

  constructor(
    private readonly store: RunStore,
    private readonly runId: string,
    /** Whether the engine still holds the task open (its outcome is not final). */
    private readonly pending: (taskId: string) => boolean,
  ) {}

  outcome(nodeId: string, taskId: string): TaskOutcomeReply {
    const task = this.store.task(taskId);
    if (!task || task.runId !== this.runId) throw notFound(`unknown task ${echo(taskId)} in run ${this.runId}`);
    if (task.nodeId !== nodeId) throw new RpcError(status.PERMISSION_DENIED, `task ${echo(taskId)} was not assigned to this node`);
    const update = this.store.updateOfTask(taskId);
    if (!update) {
      if (task.declinedAt !== null) return { verdict: 'declined', reason: task.declineReason ?? '', round: task.round };
      if (this.pending(taskId)) return { verdict: 'pending', round: task.round };
      return { verdict: 'missing', reason: `no update from this task went into a committed round`, round: task.round };
    }
    return {
      verdict: update.verdict,
      reason: update.reason,
      weight: update.weight,
      update_digest: update.updateDigest,
      round: update.round,
      record: this.record(update.round),
    };
  }

  private record(round: number): RoundRecord | undefined {
    const cached = this.records.get(round);
    if (cached) return cached;
    const row = this.store.committedRound(this.runId, round);
    if (!row) return undefined;
    const record: RoundRecord = {
      experiment_id: this.runId,
      round: row.round,
      previous_model_sha256: row.previousModelSha256,
      model_sha256: row.modelSha256,
      accepted: this.store.creditedUpdates(this.runId, row.round).map((u) => ({
        task_id: u.task_id,
        update_digest: u.update_digest_hex,
        signature: u.signature_b64,
      })),
      aggregator_signature: row.aggregatorSignature,
    };
    this.records.set(round, record);
    // A Map iterates in insertion order: the first key is the oldest record.
    if (this.records.size > RECORDS_KEPT) this.records.delete(this.records.keys().next().value!);
    return record;
  }
}

// The commit of an aggregation, the same for a synchronous round and a FedBuff
// model version: evaluate, write the checkpoint, sign the round record, write
// the round (its row, every verdict, the nodes' reputations) in one database
// transaction, write the signed record beside the database, then close the
// sessions of nodes it banned.
//
// The order is what makes a crash harmless: the checkpoint is durable before
// the database names it, so a committed round always has its model on disk
// (resume.ts loads it and checks its hash). A crash between the two leaves a
// checkpoint no committed round names; resume ignores it and the round runs
// again, overwriting it. The other order would leave a committed round whose
// model is missing, and the run could not be resumed. commit.test.ts holds it.
//
// The signed record file (records/round-NNNN.json) follows the database commit
// synchronously, with no await between them: no node can hear of a commit whose
// record is not on disk yet. A record the database does not hold therefore
// proves the database lost a commit, and start-up refuses to resume over it
// (run-directory.ts).
import type { Experiment } from '../experiment/schema.js';
import { publicKeyToString, type Identity } from '../../core/signing/keys.js';
import { digestHex, sign, signatureToString } from '../../core/signing/ed25519.js';
import { byTaskId, ROUND_TAG, roundDigest } from '../../core/signing/layouts.js';
import type { TensorEntry } from '../../core/tensor-codec.js';
import { crashPoint } from '../crash-points.js';
import { reputationChanges, type ReputationChange } from '../nodes/reputation.js';
import type { Sessions } from '../nodes/sessions.js';
import { checkpointDirName, writeCheckpoint } from '../store/checkpoints.js';
import type { RunStore } from '../store/run-store.js';
import { writeRoundRecordFile } from '../store/signed-records.js';
import { inModel, type UpdateRow } from '../store/schema.js';
import { hasEvidence } from '../robust/verdict.js';
import { encodeServerState } from '../strategies/server-optimizers.js';
import type { StrategyStep } from '../strategies/strategy.js';
import type { RoundRecord } from './engine.js';
import { updateRow, type AcceptedUpdate } from './uploads.js';
import { summarizeVerdicts } from './verdict-summary.js';

export interface CommitContext {
  experiment: Experiment;
  runId: string;
  identity: Identity;
  store: RunStore;
  sessions: Sessions;
  checkpointsDir: string;
  /** Where each committed round's signed record is written (records/). */
  recordsDir: string;
  topology: object;
  manifest: readonly TensorEntry[];
  evaluate: (weights: Float32Array) => Promise<{ accuracy: number; loss: number }>;
}

export interface AggregationToCommit {
  round: number;
  attempt: number;
  selected: number;
  startedAt: number;
  previousModelSha256: string;
  /** The aggregation's inputs, in the order they were aggregated (the verdicts' order). */
  updates: readonly AcceptedUpdate[];
  step: StrategyStep;
  /** Uploads refused before aggregation, recorded with the round. */
  refused: readonly UpdateRow[];
}

/**
 * Evaluates, checkpoints, signs and commits an aggregation in one transaction,
 * then closes the sessions of nodes it banned. Returns the round's record; the
 * caller publishes the model.
 */
export async function commitAggregation(c: CommitContext, a: AggregationToCommit): Promise<{ record: RoundRecord; banned: ReputationChange[] }> {
  const { store, runId, step, updates } = { ...c, ...a };
  const { accuracy, loss } = await c.evaluate(step.weights);
  // The optimizer state goes into the checkpoint directory, renamed into place with the model it belongs to.
  const checkpoint = writeCheckpoint(
    c.checkpointsDir,
    checkpointDirName(a.round),
    c.topology,
    c.manifest,
    step.weights,
    step.serverState ? encodeServerState(step.serverState) : undefined,
  );
  crashPoint('mid-commit', a.round);
  const closedAt = Date.now();
  const seconds = (closedAt - a.startedAt) / 1000;
  const longestTraining = Math.max(0, ...updates.map((u) => u.meta.metrics?.train_seconds ?? 0));
  const kept = step.verdicts.filter((v) => inModel(v.verdict)).length;
  const signed = {
    experiment_id: runId,
    round: a.round,
    previous_model_sha256: a.previousModelSha256,
    model_sha256: checkpoint.sha256,
    accepted: updates
      .filter((_, i) => inModel(step.verdicts[i]!.verdict))
      .map((u) => ({ task_id: u.taskId, update_digest_hex: u.digest, signature_b64: u.signature }))
      .sort(byTaskId),
  };
  const audit = roundDigest(signed);
  const auditSignature = signatureToString(sign(audit, c.identity));
  const examples = updates.reduce((sum, u) => sum + u.numExamples, 0);
  const record: RoundRecord = {
    round: a.round,
    accuracy,
    loss,
    participants: kept,
    selected: a.selected,
    rejected: step.verdicts.filter((v) => v.verdict === 'rejected').length + a.refused.length,
    not_selected: step.verdicts.filter((v) => v.verdict === 'not-selected').length,
    examples,
    seconds,
    overhead_seconds: Math.max(0, seconds - longestTraining),
    model_sha256: checkpoint.sha256,
    round_digest: digestHex(audit),
    aggregator_signature: auditSignature,
    verdicts: summarizeVerdicts([...step.verdicts, ...a.refused.map((r) => ({ verdict: r.verdict, weight: 0, reason: r.reason ?? '', evidence: r.evidence }))]),
  };
  const reputations = reputationChanges(
    c.experiment.reputation,
    (nodeId) => store.node(nodeId) ?? { reputation: 1, verdicts: 0 },
    [
      ...updates.map((u, i) => ({ nodeId: u.nodeId, evidence: hasEvidence(step.verdicts[i]!) })),
      ...a.refused.map((r) => ({ nodeId: r.nodeId, evidence: true })),
    ],
  );
  store.commitRound({
    reputations,
    round: {
      runId,
      round: a.round,
      attempt: a.attempt,
      status: 'committed',
      selected: a.selected,
      participants: kept,
      examples,
      accuracy,
      loss,
      modelSha256: checkpoint.sha256,
      previousModelSha256: a.previousModelSha256,
      roundDigest: record.round_digest,
      aggregatorSignature: auditSignature,
      startedAt: a.startedAt,
      closedAt,
      seconds,
      overheadSeconds: record.overhead_seconds,
    },
    updates: [...updates.map((u, i) => updateRow(runId, a.round, u, step.verdicts[i]!, u.reputation)), ...a.refused],
  });
  writeRoundRecordFile(c.recordsDir, {
    layout: ROUND_TAG,
    ...signed,
    round_digest: record.round_digest,
    aggregator_signature: auditSignature,
    aggregator_public_key: publicKeyToString(c.identity.publicKey),
    attempt: a.attempt,
    committed_at: closedAt,
    accuracy: Number.isFinite(accuracy) ? accuracy : null,
    loss: Number.isFinite(loss) ? loss : null,
  });
  crashPoint('after-commit', a.round);
  const banned = reputations.filter((r) => r.ban);
  for (const b of banned) {
    // Its next call finds no session, and its next hello is refused with the reason.
    for (const s of c.sessions.all()) if (s.nodeId === b.nodeId) c.sessions.close(s.id);
  }
  return { record, banned };
}

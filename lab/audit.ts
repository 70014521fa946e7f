// Checks a run's signed record offline: every kept update's signature under
// its node's key, and every committed round's signature by the aggregator
// over the new model hash and the updates that made it.
import { publicKeyFromString } from '../core/signing/keys.js';
import { digestHex, signatureFromString, verify } from '../core/signing/ed25519.js';
import { roundDigest, updateDigest } from '../core/signing/layouts.js';
import type { RunStore } from '../aggregator/store/run-store.js';
import { inModel } from '../aggregator/store/schema.js';

export interface RoundAudit {
  round: number;
  problems: string[];
}

export function auditRun(store: RunStore, runId: string): RoundAudit[] {
  const run = store.getRun(runId);
  if (!run) return [{ round: 0, problems: [`no run ${runId} in this database`] }];
  const aggregatorKey = publicKeyFromString(run.aggregatorPublicKey);
  const keys = new Map(store.nodeRows().map((n) => [n.nodeId, n.publicKey]));
  let previous: string | undefined;
  return store.committedRounds(runId).map((r) => {
    const problems: string[] = [];
    if (previous !== undefined && r.previousModelSha256 !== previous) {
      problems.push(`round ${r.round} starts from ${r.previousModelSha256.slice(0, 12)}, not from the previous round's model ${previous.slice(0, 12)}`);
    }
    previous = r.modelSha256;
    const kept = store.updatesOfRound(runId, r.round).filter((u) => inModel(u.verdict));
    for (const u of kept) {
      const key = keys.get(u.nodeId);
      const signature = signatureFromString(u.signature);
      if (!key || !signature) {
        problems.push(`update ${u.taskId}: no key for node ${u.nodeId} or no signature`);
        continue;
      }
      let digest: Uint8Array;
      try {
        const m = JSON.parse(u.metrics) as Record<string, number | boolean | null>;
        digest = updateDigest({
          experiment_id: runId,
          // A FedBuff update was trained for (signed with) the round it was issued in, `staleness` rounds earlier.
          round: u.round - (u.staleness ?? 0),
          task_id: u.taskId,
          base_model_sha256: u.baseModelSha256,
          update_sha256: u.updateSha256,
          num_examples: u.numExamples,
          metrics: {
            // JSON has no NaN: a metric that was NaN is stored as null.
            loss: (m.loss as number | null) ?? Number.NaN,
            accuracy: (m.accuracy as number | null) ?? Number.NaN,
            train_seconds: Number(m.train_seconds ?? 0),
            examples_per_second: Number(m.examples_per_second ?? 0),
            epochs_completed: Number(m.epochs_completed ?? 0),
            partial: Boolean(m.partial),
          },
          node_public_key: publicKeyFromString(key),
        });
      } catch (err) {
        problems.push(`update ${u.taskId}: its stored fields cannot be signed data (${(err as Error).message})`);
        continue;
      }
      if (digestHex(digest) !== u.updateDigest) problems.push(`update ${u.taskId}: stored fields do not match its recorded digest`);
      if (!verify(digest, signature, publicKeyFromString(key))) problems.push(`update ${u.taskId}: signature does not verify under node ${u.nodeId}'s key`);
    }
    const audit = roundDigest({
      experiment_id: runId,
      round: r.round,
      previous_model_sha256: r.previousModelSha256,
      model_sha256: r.modelSha256,
      accepted: store.creditedUpdates(runId, r.round),
    });
    const signature = signatureFromString(r.aggregatorSignature);
    if (digestHex(audit) !== r.roundDigest) problems.push('the round record does not match its recorded digest');
    if (!signature || !verify(audit, signature, aggregatorKey)) problems.push("the aggregator's signature over the round does not verify");
    return { round: r.round, problems };
  });
}

// What the synchronous round engine (rounds.ts) and the buffered asynchronous
// one (buffered-rounds.ts) share: the signed task, the checks every upload
// passes, the models served for download, and the commit of an aggregation
// (checkpoint, signed round record, one database transaction).
import { randomUUID } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import type { Experiment } from '../experiment/schema.js';
import type { Identity } from '../../core/signing/keys.js';
import { digestHex, sign, signatureToString, verify } from '../../core/signing/ed25519.js';
import { byTaskId, roundDigest, taskDigest, updateDigest } from '../../core/signing/layouts.js';
import { firstNonFinite, float32ToBytes, manifestMismatch, sha256Hex, type TensorEntry } from '../../core/tensor-codec.js';
import { Rng } from '../../core/rng.js';
import type { Task } from '../../proto/generated/crowdfl/v1/Task.js';
import type { TensorSpec } from '../../proto/generated/crowdfl/v1/TensorSpec.js';
import type { UpdateMeta__Output } from '../../proto/generated/crowdfl/v1/UpdateMeta.js';
import type { UpdateSeal__Output } from '../../proto/generated/crowdfl/v1/UpdateSeal.js';
import { crashPoint } from '../crash-points.js';
import { reputationChanges, selectable, type ReputationChange } from '../nodes/reputation.js';
import type { Verdict } from '../robust/verdict.js';
import { invalid, notFound, RpcError } from '../rpc-error.js';
import type { Session, Sessions } from '../nodes/sessions.js';
import { checkpointDirName, writeCheckpoint } from '../store/checkpoints.js';
import type { RunStore } from '../store/run-store.js';
import type { UpdateRow } from '../store/schema.js';
import type { UpdateBlobs } from '../store/update-blobs.js';
import { encodeServerState } from '../strategies/server-optimizers.js';
import type { ReceivedUpdate, RoundTraining, StrategyStep } from '../strategies/strategy.js';
import { summarizeVerdicts } from './verdict-summary.js';

export interface RoundRecord {
  round: number;
  accuracy: number;
  loss: number;
  participants: number;
  selected: number;
  rejected: number;
  examples: number;
  seconds: number;
  overhead_seconds: number;
  model_sha256: string;
  /** The aggregator's signed audit record of the round (see proto/crowdfl.proto, "crowdfl/round/v1"). */
  round_digest: string;
  aggregator_signature: string;
  /** What the aggregation rule did, e.g. "4 of 20 rejected (krum score)". */
  verdicts: string;
}

/**
 * Waits `ms`, or less if woken: `onWake` receives the function that ends the
 * wait early (an update arrived, the engine is stopping).
 */
export function sleepUnlessWoken(ms: number, onWake: (wake: () => void) => void): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    onWake(() => {
      clearTimeout(t);
      resolve();
    });
  });
}

/** What the gRPC handlers (server.ts) ask of an engine, whichever way it schedules work. */
export interface Engine {
  modelBytes(sha256: string): Buffer;
  manifestForWire(): TensorSpec[];
  uploadDeadline(taskId: string): number;
  taskStillWanted(taskId: string): boolean;
  taskPending(taskId: string): boolean;
  declineTask(session: Session, taskId: string, reason: string, kind: string): void;
  beginSubmission(session: Session, meta: UpdateMeta__Output): number;
  abortSubmission(meta: UpdateMeta__Output): void;
  completeSubmission(session: Session, meta: UpdateMeta__Output, seal: UpdateSeal__Output | undefined, delta: Float32Array, receivedSha: string): void;
  run(): Promise<RoundRecord[]>;
  stop(): void;
}

/** An update that passed every check, with what its row and the round record need. */
export type AcceptedUpdate = ReceivedUpdate & { meta: UpdateMeta__Output; receivedAt: number; digest: string; signature: string; updateSha256: string };

/** The order updates enter an aggregation in: by node, then task (a buffer may hold two of one node's), so arrival order never matters. */
export function byNodeThenTask<T extends { nodeId: string; taskId: string }>(a: T, b: T): number {
  if (a.nodeId !== b.nodeId) return a.nodeId < b.nodeId ? -1 : 1;
  return a.taskId < b.taskId ? -1 : a.taskId > b.taskId ? 1 : 0;
}

/** The sessions whose nodes may be given work: not banned, within their caps, and with a reputation that allows selection. */
export function eligibleSessions(store: RunStore, experiment: Experiment, sessions: readonly Session[]): Session[] {
  // One query for the registry, not one per session: selection runs with thousands connected.
  const registry = new Map(store.nodeRows().map((n) => [n.nodeId, n]));
  return sessions.filter((s) => {
    if (s.unfit) return false;
    const node = registry.get(s.nodeId);
    return node?.status !== 'banned' && selectable(experiment.reputation, node?.reputation ?? 1);
  });
}

export function manifestForWire(manifest: readonly TensorEntry[]): TensorSpec[] {
  return manifest.map((t) => ({ name: t.name, dtype: 'FLOAT32', shape: [...t.shape] }));
}

/** The models nodes may still download, by hash: the newest `keep` published. */
export class ServedModels {
  private readonly models = new Map<string, Buffer>();
  current: { weights: Float32Array; sha256: string } = { weights: new Float32Array(0), sha256: '' };

  constructor(private readonly keep: number) {}

  publish(weights: Float32Array): string {
    const bytes = float32ToBytes(weights);
    const sha256 = sha256Hex(bytes);
    this.models.delete(sha256);
    this.models.set(sha256, bytes);
    // A Map iterates in insertion order: the first keys are the oldest models.
    for (const key of this.models.keys()) if (this.models.size > this.keep) this.models.delete(key);
    this.current = { weights, sha256 };
    return sha256;
  }

  bytes(sha256: string): Buffer {
    const bytes = this.models.get(sha256);
    if (!bytes) throw notFound(`model ${sha256} is not served (it is not one of the last ${this.keep} global models)`);
    return bytes;
  }
}

/** A task for `session`, signed. Its seed depends only on (experiment seed, round, node), so a retried round asks for the same update. */
export function signedTask(
  o: { experiment: Experiment; runId: string; identity: Identity; modelJson: string; modelJsonSha256: string },
  session: Session,
  round: number,
  baseModelSha256: string,
  training: RoundTraining,
  deadline: number,
): Task {
  const taskTraining = {
    epochs: training.epochs,
    batch_size: training.batch_size,
    learning_rate: training.learning_rate,
    seed: Rng.derive(o.experiment.seed, 'task', round, session.nodeId).uint32(),
    proximal_mu: training.proximal_mu,
  };
  const task: Task = {
    task_id: randomUUID(),
    experiment_id: o.runId,
    round,
    model_json: o.modelJson,
    base_model_sha256: baseModelSha256,
    training: taskTraining,
    deadline_unix_ms: deadline,
    node_id: session.nodeId,
  };
  task.signature = Buffer.from(
    sign(
      taskDigest({
        experiment_id: o.runId,
        round,
        task_id: task.task_id!,
        base_model_sha256: baseModelSha256,
        model_json_sha256: o.modelJsonSha256,
        training: taskTraining,
        deadline_unix_ms: deadline,
        node_id: session.nodeId,
      }),
      o.identity,
    ),
  );
  return task;
}

/** Why an upload's announced shape cannot be taken, checked before any bytes arrive; undefined when it fits. */
export function shapeProblem(manifest: readonly TensorEntry[], expectedBytes: number, meta: UpdateMeta__Output): RpcError | undefined {
  const mismatch = manifestMismatch(manifest, (meta.manifest?.tensors ?? []).map((s) => ({ ...s, dtype: dtypeName(s.dtype) })));
  if (mismatch) return invalid(`update does not fit the model: ${mismatch}`);
  if (meta.manifest?.total_bytes !== expectedBytes) {
    return invalid(`manifest announces ${meta.manifest?.total_bytes} bytes, the model has ${expectedBytes}`);
  }
  if (!(meta.num_examples > 0) || !Number.isSafeInteger(meta.num_examples)) {
    return invalid(`num_examples must be a positive integer, got ${meta.num_examples}`);
  }
  return undefined;
}

/**
 * Checks a finished upload's seal and values and, when they hold, stores its
 * bytes: the error to send, or the update to aggregate. The bytes are durable
 * before any round that uses them commits, so a committed round never names
 * bytes that are not there.
 */
export function acceptSealedUpdate(
  o: { store: RunStore; updateBlobs?: UpdateBlobs },
  session: Session,
  meta: UpdateMeta__Output,
  seal: UpdateSeal__Output | undefined,
  delta: Float32Array,
  receivedSha: string,
): { error: RpcError } | { update: AcceptedUpdate } {
  const checked = checkSeal(session, meta, seal, delta, receivedSha);
  if ('error' in checked) return checked;
  o.updateBlobs?.put(receivedSha, new Uint8Array(delta.buffer, delta.byteOffset, delta.byteLength));
  return {
    update: {
      nodeId: session.nodeId,
      taskId: meta.task_id,
      numExamples: meta.num_examples,
      reputation: o.store.node(session.nodeId)?.reputation ?? 1,
      // The assembler's buffer belongs to this upload alone, so no copy is needed.
      delta,
      meta,
      receivedAt: Date.now(),
      digest: checked.digest,
      signature: checked.signature,
      updateSha256: receivedSha,
    },
  };
}

function checkSeal(
  session: Session,
  meta: UpdateMeta__Output,
  seal: UpdateSeal__Output | undefined,
  delta: Float32Array,
  receivedSha: string,
): { error: RpcError } | { digest: string; signature: string } {
  if (!seal || seal.signature.length !== 64) {
    return { error: new RpcError(status.UNAUTHENTICATED, "unsigned update: the upload must end with a seal carrying the node's 64-byte Ed25519 signature") };
  }
  if (!/^[0-9a-f]{64}$/.test(seal.update_sha256)) {
    return { error: invalid('seal.update_sha256 must be the lowercase hex SHA-256 of the update bytes') };
  }
  const digest = updateDigest({
    experiment_id: meta.experiment_id,
    round: meta.round,
    task_id: meta.task_id,
    base_model_sha256: meta.base_model_sha256,
    update_sha256: seal.update_sha256,
    num_examples: meta.num_examples,
    metrics: {
      loss: meta.metrics?.loss ?? 0,
      accuracy: meta.metrics?.accuracy ?? 0,
      train_seconds: meta.metrics?.train_seconds ?? 0,
      examples_per_second: meta.metrics?.examples_per_second ?? 0,
      epochs_completed: meta.metrics?.epochs_completed ?? 0,
      partial: meta.metrics?.partial ?? false,
    },
    node_public_key: session.publicKey,
  });
  if (!verify(digest, seal.signature, session.publicKey)) {
    return {
      error: new RpcError(status.UNAUTHENTICATED, `bad signature: the update's signature does not verify under node ${session.nodeId}'s key`),
    };
  }
  if (seal.update_sha256 !== receivedSha) {
    return { error: invalid(`update bytes hash to ${receivedSha}, but the signed update_sha256 is ${seal.update_sha256}`) };
  }
  const bad = firstNonFinite(delta);
  if (bad >= 0) return { error: invalid(`update value ${bad} is ${delta[bad]}; only finite numbers are accepted`) };
  return { digest: digestHex(digest), signature: signatureToString(seal.signature) };
}

/** The row of a refused upload: a rejected verdict of the round it would have entered. */
export function refusedRow(runId: string, round: number, taskId: string, nodeId: string, meta: UpdateMeta__Output, reason: string, updateSha = ''): UpdateRow {
  return {
    runId,
    round,
    taskId,
    nodeId,
    numExamples: Number.isSafeInteger(meta.num_examples) ? meta.num_examples : 0,
    baseModelSha256: meta.base_model_sha256,
    updateSha256: updateSha,
    metrics: JSON.stringify(meta.metrics ?? {}),
    verdict: 'rejected',
    weight: 0,
    reason,
    receivedAt: Date.now(),
  };
}

export function updateRow(runId: string, round: number, u: AcceptedUpdate, v: Verdict, inputReputation: number | null = null): UpdateRow {
  return {
    runId,
    round,
    taskId: u.taskId,
    nodeId: u.nodeId,
    numExamples: u.numExamples,
    baseModelSha256: u.meta.base_model_sha256,
    updateSha256: u.updateSha256,
    updateDigest: u.digest,
    signature: u.signature,
    metrics: JSON.stringify(u.meta.metrics ?? {}),
    verdict: v.verdict,
    weight: v.weight,
    score: v.score ?? null,
    reason: v.reason,
    inputReputation,
    staleness: inputReputation === null ? null : u.staleness ?? null,
    receivedAt: u.receivedAt,
  };
}

export interface CommitContext {
  experiment: Experiment;
  runId: string;
  identity: Identity;
  store: RunStore;
  sessions: Sessions;
  checkpointsDir: string;
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
  const kept = step.verdicts.filter((v) => v.verdict !== 'rejected').length;
  const audit = roundDigest({
    experiment_id: runId,
    round: a.round,
    previous_model_sha256: a.previousModelSha256,
    model_sha256: checkpoint.sha256,
    accepted: updates
      .filter((_, i) => step.verdicts[i]!.verdict !== 'rejected')
      .map((u) => ({ task_id: u.taskId, update_digest_hex: u.digest, signature_b64: u.signature }))
      .sort(byTaskId),
  });
  const auditSignature = signatureToString(sign(audit, c.identity));
  const examples = updates.reduce((sum, u) => sum + u.numExamples, 0);
  const record: RoundRecord = {
    round: a.round,
    accuracy,
    loss,
    participants: kept,
    selected: a.selected,
    rejected: updates.length - kept + a.refused.length,
    examples,
    seconds,
    overhead_seconds: Math.max(0, seconds - longestTraining),
    model_sha256: checkpoint.sha256,
    round_digest: digestHex(audit),
    aggregator_signature: auditSignature,
    verdicts: summarizeVerdicts([...step.verdicts, ...a.refused.map((r) => ({ verdict: r.verdict, weight: 0, reason: r.reason ?? '' }))]),
  };
  const reputations = reputationChanges(
    c.experiment.reputation,
    (nodeId) => store.node(nodeId) ?? { reputation: 1, verdicts: 0 },
    [
      ...updates.map((u, i) => ({ nodeId: u.nodeId, verdict: step.verdicts[i]!.verdict })),
      ...a.refused.map((r) => ({ nodeId: r.nodeId, verdict: 'rejected' as const })),
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
  crashPoint('after-commit', a.round);
  const banned = reputations.filter((r) => r.ban);
  for (const b of banned) {
    // Its next call finds no session, and its next hello is refused with the reason.
    for (const s of c.sessions.all()) if (s.nodeId === b.nodeId) c.sessions.close(s.id);
  }
  return { record, banned };
}

export function dtypeName(dtype: string | number | undefined): string {
  return dtype === 'FLOAT32' ? 'float32' : String(dtype ?? 'unspecified').toLowerCase();
}

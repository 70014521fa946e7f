// The life of a task and of the upload that answers it, one copy for both
// round engines: the task is signed and handed to a node; an upload is checked
// before any of its bytes are taken (begin: the run, the task, the node, the
// round, the base model, the shape) and again once they are in (complete: the
// seal, the signature, the hash, the values), and its bytes are stored; a
// refusal, a decline or a dead node ends the task. Every refused upload
// becomes a rejected verdict row, every aggregated one a verdict row.
//
// A security fix to a check made here holds for both engines. What the two
// legitimately do differently (where a task is kept and for how long, how a
// closed task is explained, FedBuff's staleness) comes in through TaskBook.
import { randomUUID } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import type { Identity } from '../../core/signing/keys.js';
import { digestHex, sign, signatureToString, verify } from '../../core/signing/ed25519.js';
import { modelJsonSha256, taskDigest, updateDigest } from '../../core/signing/layouts.js';
import { firstNonFinite, manifestBytes, manifestMismatch, type TensorEntry } from '../../core/tensor-codec.js';
import { Rng } from '../../core/rng.js';
import type { Experiment } from '../experiment/schema.js';
import type { Task } from '../../proto/generated/crowdfl/v1/Task.js';
import type { UpdateMeta__Output } from '../../proto/generated/crowdfl/v1/UpdateMeta.js';
import type { UpdateSeal__Output } from '../../proto/generated/crowdfl/v1/UpdateSeal.js';
import { crashPoint } from '../crash-points.js';
import type { Session } from '../nodes/sessions.js';
import type { Verdict } from '../robust/verdict.js';
import { alreadyExists, echo, invalid, notFound, precondition, RpcError } from '../rpc-error.js';
import type { RunStore } from '../store/run-store.js';
import type { UpdateRow } from '../store/schema.js';
import type { UpdateBlobs } from '../store/update-blobs.js';
import type { ReceivedUpdate, RoundTraining } from '../strategies/strategy.js';
import type { Engine, EngineOptions, RoundRecord } from './engine.js';
import { manifestForWire, type ServedModels } from './served-models.js';
import type { TensorSpec } from '../../proto/generated/crowdfl/v1/TensorSpec.js';

/** How long past its task's deadline an upload under way may take to finish the transfer. */
export const UPLOAD_SLACK_MS = 10_000;

/** An update that passed every check, with what its row and the round record need. */
export type AcceptedUpdate = ReceivedUpdate & { meta: UpdateMeta__Output; receivedAt: number; digest: string; signature: string; updateSha256: string };

/**
 * Where a task is in its life. The desk moves it from assigned (through
 * receiving while its upload streams in) to one of the four ends.
 */
export type TaskState = 'assigned' | 'receiving' | 'accepted' | 'rejected' | 'declined' | 'dropped';

/** A task handed out, as the engine keeps it. */
export interface IssuedTask {
  task: Task;
  sessionId: string;
  nodeId: string;
  /** When the node's update is due; an upload under way gets UPLOAD_SLACK_MS more. */
  deadline: number;
  state: TaskState;
}

/** How a task ended, told to the engine so it can keep the update or the refusal. */
export type TaskEnd =
  | { state: 'accepted'; update: AcceptedUpdate }
  | { state: 'rejected'; row: UpdateRow }
  | { state: 'declined' }
  | { state: 'dropped' };

/** What the desk asks of the engine whose tasks it checks. */
export interface TaskBook<T extends IssuedTask> {
  /** The task if the engine still holds it (a synchronous round holds answered tasks until it closes). */
  find(taskId: string): T | undefined;
  /** Every task the engine still holds. */
  held(): Iterable<T>;
  /**
   * Why a task the engine no longer holds was closed ("round 3 closed"), to
   * tell a late upload or decline; undefined for an id never issued or long
   * forgotten. `asking` is there because the synchronous engine words its
   * answer to a decline differently ("round 3 already closed").
   */
  whyClosed(taskId: string, asking: 'upload' | 'decline'): string | undefined;
  /**
   * The round an upload for `t` arriving now would go into: the task's own in
   * a synchronous round; in FedBuff the next model to publish, which may be
   * later than the task's round (the update is stale, but still counts).
   */
  roundNow(t: T): number;
  /** Updates received towards the aggregation being filled, and how many it waits for (reported with every upload). */
  progress(): { received: number; selected: number };
  /**
   * The refusal for an upload whose base model is not its task's. The check is
   * the same for both engines; the wording differs because a synchronous round
   * has one base model for every task and FedBuff one per task.
   */
  wrongBaseModel(t: T, meta: UpdateMeta__Output): RpcError;
  /** The refusal for an upload whose task ended while its bytes were arriving (round closed, task expired). */
  endedWhileUploading(meta: UpdateMeta__Output): RpcError;
  /**
   * A check only this engine makes, after the shared ones and before the
   * shape (FedBuff: too stale); its failure is recorded like any refusal.
   */
  engineRefusal?(t: T, meta: UpdateMeta__Output): RpcError | undefined;
  /** `t` has ended (its state already says how): keep what the engine needs of it. */
  ended(t: T, end: TaskEnd): void;
  /** Something changed that the engine's scheduling loop may be waiting for. */
  wake(): void;
}

/** The bytes every upload carries: those of the model. The engine's first model must fit the same manifest. */
function expectedUploadBytes(manifest: readonly TensorEntry[], initialWeights: Float32Array): number {
  const bytes = manifestBytes(manifest);
  if (initialWeights.length * 4 !== bytes) {
    throw new Error(`initial weights have ${initialWeights.length} values, manifest needs ${bytes / 4}`);
  }
  return bytes;
}

export class UploadDesk<T extends IssuedTask> {
  readonly expectedBytes: number;
  /** The model's topology as sent in every task, and its hash as signed in every task. */
  private readonly modelJson: string;
  private readonly modelJsonSha256: string;

  constructor(
    private readonly o: EngineOptions,
    private readonly book: TaskBook<T>,
  ) {
    this.expectedBytes = expectedUploadBytes(o.manifest, o.initialWeights);
    this.modelJson = JSON.stringify(o.topology);
    this.modelJsonSha256 = modelJsonSha256(this.modelJson);
  }

  /**
   * Signs a task for `session`, gives it to the engine to hold (`hold`: the
   * desk's record, which the engine may extend), records it and hands it to
   * the node. Returns the task's id.
   */
  issue(
    session: Session,
    t: { round: number; attempt: number; baseModelSha256: string; training: RoundTraining; issuedAt: number; deadline: number },
    hold: (issued: IssuedTask) => void,
  ): string {
    const task = signedTask(
      { ...this.o, modelJson: this.modelJson, modelJsonSha256: this.modelJsonSha256 },
      session,
      t.round,
      t.baseModelSha256,
      t.training,
      t.deadline,
    );
    const taskId = task.task_id!;
    hold({ task, sessionId: session.id, nodeId: session.nodeId, deadline: t.deadline, state: 'assigned' });
    this.o.store.recordTask({ taskId, runId: this.o.runId, round: t.round, attempt: t.attempt, nodeId: session.nodeId, issuedAt: t.issuedAt, deadline: t.deadline });
    this.o.sessions.assign(session, task);
    crashPoint('selection', t.round);
    return taskId;
  }

  /** When an upload for this task must have finished: the task's deadline, plus slack for the transfer. */
  uploadDeadline(taskId: string): number {
    return (this.book.find(taskId)?.deadline ?? Date.now()) + UPLOAD_SLACK_MS;
  }

  /** Is the node still wanted on this task (heartbeats ask)? */
  stillWanted(taskId: string): boolean {
    const state = this.book.find(taskId)?.state;
    return state === 'assigned' || state === 'receiving';
  }

  /** The node will not answer its task: free the slot now rather than at the deadline. */
  decline(session: Session, taskId: string, reason: string, kind: string): void {
    const t = this.held(taskId, 'decline', 'there is nothing to decline');
    if (t.nodeId !== session.nodeId) throw new RpcError(status.PERMISSION_DENIED, `task ${echo(taskId)} was not assigned to this node`);
    if (t.state !== 'assigned') throw alreadyExists(`task ${echo(taskId)} was already answered (${t.state})`);
    this.o.store.recordDecline(taskId, t.nodeId, reason, kind);
    this.end(t, { state: 'declined' });
    this.o.onEvent?.({ type: 'task-declined', round: t.task.round!, nodeId: t.nodeId, reason });
    this.book.wake();
  }

  /**
   * Checks an upload's metadata before any bytes are accepted, so a wrong or
   * late upload costs the aggregator nothing. Returns the bytes to expect.
   */
  begin(session: Session, meta: UpdateMeta__Output): number {
    if (meta.experiment_id !== this.o.runId) {
      throw notFound(`unknown experiment ${echo(meta.experiment_id)}; this aggregator runs ${this.o.runId}`);
    }
    const t = this.held(meta.task_id, 'upload', 'the update came too late');
    const node = this.o.store.node(session.nodeId);
    // Banned while its task was out (e.g. by `crowdfl nodes ban`): refused, and the task ends here, so the round
    // does not wait on it until its deadline.
    if (node?.status === 'banned') {
      throw this.refuse(t, meta, new RpcError(status.PERMISSION_DENIED, `node ${session.nodeId} is banned: ${node.statusReason}`));
    }
    if (t.nodeId !== session.nodeId) throw new RpcError(status.PERMISSION_DENIED, `task ${echo(meta.task_id)} was not assigned to this node`);
    if (meta.round !== t.task.round) throw precondition(`task ${echo(meta.task_id)} belongs to round ${t.task.round}, not ${meta.round}`);
    if (t.state !== 'assigned') throw alreadyExists(`task ${echo(meta.task_id)} was already answered (${t.state})`);
    if (meta.base_model_sha256 !== t.task.base_model_sha256) throw this.book.wrongBaseModel(t, meta);
    const problem =
      this.book.engineRefusal?.(t, meta) ??
      shapeProblem(this.o.manifest, this.expectedBytes, meta) ??
      claimProblem(meta, session.capabilities.num_examples);
    if (problem) throw this.refuse(t, meta, problem);
    t.state = 'receiving';
    crashPoint('mid-upload', this.book.roundNow(t));
    return this.expectedBytes;
  }

  /** The upload's stream broke before it finished: the node may try again. */
  abort(meta: UpdateMeta__Output): void {
    const t = this.book.find(meta.task_id);
    if (t?.state === 'receiving') t.state = 'assigned';
  }

  /**
   * Checks the seal against the bytes received (hashed as they streamed in)
   * and hands the update to the engine, or records why not.
   */
  complete(session: Session, meta: UpdateMeta__Output, seal: UpdateSeal__Output | undefined, delta: Float32Array, receivedSha: string): void {
    const t = this.book.find(meta.task_id);
    if (!t || t.state !== 'receiving') throw this.book.endedWhileUploading(meta);
    const accepted = acceptSealedUpdate(this.o, session, meta, seal, delta, receivedSha);
    if ('error' in accepted) throw this.refuse(t, meta, accepted.error, receivedSha);
    this.end(t, { state: 'accepted', update: accepted.update });
    this.updateEvent(t, true, '');
    this.book.wake();
  }

  /** Ends the tasks of nodes whose sessions expired (or closed) before they started uploading. */
  dropDeadNodes(): void {
    const dead = new Set(this.o.sessions.expire().map((s) => s.id));
    if (dead.size === 0) return;
    for (const t of this.book.held()) {
      if (t.state === 'assigned' && dead.has(t.sessionId)) this.end(t, { state: 'dropped' });
    }
    this.book.wake();
  }

  /** The task the engine holds, or the error that says why there is none. */
  private held(taskId: string, asking: 'upload' | 'decline', consequence: string): T {
    const t = this.book.find(taskId);
    if (t) return t;
    const why = this.book.whyClosed(taskId, asking);
    if (why !== undefined) throw precondition(`${why}; ${consequence}`);
    throw notFound(`unknown task ${echo(taskId)}`);
  }

  /** Records a refused upload as a rejected verdict and returns the error to send. */
  private refuse(t: T, meta: UpdateMeta__Output, error: RpcError, updateSha = ''): RpcError {
    const row = refusedRow(this.o.runId, this.book.roundNow(t), t.task.task_id!, t.nodeId, meta, error.message, updateSha);
    error.recorded = true;
    this.end(t, { state: 'rejected', row });
    this.updateEvent(t, false, error.message);
    this.book.wake();
    return error;
  }

  private end(t: T, end: TaskEnd): void {
    t.state = end.state;
    this.book.ended(t, end);
    this.o.sessions.release(t.task.task_id!);
  }

  private updateEvent(t: T, accepted: boolean, reason: string): void {
    this.o.onEvent?.({ type: 'update', round: this.book.roundNow(t), nodeId: t.nodeId, accepted, reason, ...this.book.progress() });
  }
}

/** A task for `session`, signed. Its seed depends only on (experiment seed, round, node), so a retried round asks for the same update. */
function signedTask(
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
/**
 * Why an update's example count cannot be taken: num_examples counts the node's local examples (not
 * × epochs), so it can be no more than the training set the node declared at hello. The count is the
 * node's own claim either way; the robust rules cap what any claim can weigh (max_examples_ratio).
 */
function claimProblem(meta: UpdateMeta__Output, declared: number): RpcError | undefined {
  if (meta.num_examples <= declared) return undefined;
  return invalid(
    `num_examples ${meta.num_examples} is more than the ${declared} local examples this node declared at hello; ` +
      'num_examples counts local examples, not examples × epochs',
  );
}

function shapeProblem(manifest: readonly TensorEntry[], expectedBytes: number, meta: UpdateMeta__Output): RpcError | undefined {
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

function dtypeName(dtype: string | number | undefined): string {
  return dtype === 'FLOAT32' ? 'float32' : String(dtype ?? 'unspecified').toLowerCase();
}

/**
 * Checks a finished upload's seal and values and, when they hold, stores its
 * bytes: the error to send, or the update to aggregate. The bytes are durable
 * before any round that uses them commits, so a committed round never names
 * bytes that are not there.
 */
function acceptSealedUpdate(
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
    return { error: invalid(`update bytes hash to ${receivedSha}, but the signed update_sha256 is ${echo(seal.update_sha256)}`) };
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
    // The node sent what the protocol refuses (a bad signature, a claim above its declaration, a wrong
    // shape, non-finite values) or was banned meanwhile: evidence, as a rule's rejection is.
    evidence: reason,
    receivedAt: Date.now(),
  };
}

/** A rule's verdict, or the outcome of an update whose round was abandoned before any rule saw it. */
export type UpdateOutcome =
  | Verdict
  | { readonly verdict: 'abandoned'; readonly weight: 0; readonly reason: string; readonly score?: undefined; readonly evidence?: undefined };

export function updateRow(runId: string, round: number, u: AcceptedUpdate, v: UpdateOutcome, inputReputation: number | null = null): UpdateRow {
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
    evidence: v.evidence ?? null,
    inputReputation,
    staleness: inputReputation === null ? null : u.staleness ?? null,
    receivedAt: u.receivedAt,
  };
}

/**
 * The Engine methods a node's calls reach, the same for both engines:
 * downloads come from the engine's ServedModels, and everything about a task
 * goes through its UploadDesk. The engines differ only in how they schedule
 * work (run, stop, and when a task's outcome is final).
 */
export abstract class DeskEngine<T extends IssuedTask> implements Engine {
  protected abstract readonly served: ServedModels;
  protected abstract readonly desk: UploadDesk<T>;

  constructor(protected readonly o: EngineOptions) {}

  abstract run(): Promise<RoundRecord[]>;
  abstract stop(): void;
  abstract taskPending(taskId: string): boolean;

  modelBytes(sha256: string): Buffer {
    return this.served.bytes(sha256);
  }

  manifestForWire(): TensorSpec[] {
    return manifestForWire(this.o.manifest);
  }

  uploadDeadline(taskId: string): number {
    return this.desk.uploadDeadline(taskId);
  }

  /** Is the node still wanted on this task (heartbeats ask)? */
  taskStillWanted(taskId: string): boolean {
    return this.desk.stillWanted(taskId);
  }

  declineTask(session: Session, taskId: string, reason: string, kind: string): void {
    this.desk.decline(session, taskId, reason, kind);
  }

  beginSubmission(session: Session, meta: UpdateMeta__Output): number {
    return this.desk.begin(session, meta);
  }

  abortSubmission(meta: UpdateMeta__Output): void {
    this.desk.abort(meta);
  }

  completeSubmission(session: Session, meta: UpdateMeta__Output, seal: UpdateSeal__Output | undefined, delta: Float32Array, receivedSha: string): void {
    this.desk.complete(session, meta, seal, delta, receivedSha);
  }
}

// FedBuff (Nguyen et al. 2022, "Federated Learning with Buffered Asynchronous
// Aggregation"): tasks are handed out continuously against the current model,
// every update that arrives goes into a buffer, and each K buffered updates
// become the next published model. No round waits for a straggler; a late
// update still counts, discounted by how many models were published since it
// started (its staleness), unless it is older than max_staleness.
//
// A published model is committed exactly like a synchronous round (same
// record, signature, checkpoint and transaction, as round = version), so
// audit, replay and resume treat both alike. The buffer is not durable: a
// crash loses it like a synchronous round's open attempt, and the restarted
// aggregator continues from the last published model.
import { status } from '@grpc/grpc-js';
import type { StrategySpec } from '../experiment/schema.js';
import { manifestBytes } from '../../core/tensor-codec.js';
import { modelJsonSha256 } from '../../core/signing/layouts.js';
import { Rng } from '../../core/rng.js';
import type { Task } from '../../proto/generated/crowdfl/v1/Task.js';
import type { TensorSpec } from '../../proto/generated/crowdfl/v1/TensorSpec.js';
import type { UpdateMeta__Output } from '../../proto/generated/crowdfl/v1/UpdateMeta.js';
import type { UpdateSeal__Output } from '../../proto/generated/crowdfl/v1/UpdateSeal.js';
import { crashPoint } from '../crash-points.js';
import {
  acceptSealedUpdate,
  byNodeThenTask,
  commitAggregation,
  eligibleSessions,
  sleepUnlessWoken,
  manifestForWire,
  refusedRow,
  ServedModels,
  shapeProblem,
  signedTask,
  type AcceptedUpdate,
  type Engine,
  type RoundRecord,
} from './engine.js';
import { AggregationError } from '../robust/verdict.js';
import { alreadyExists, notFound, precondition, RpcError } from '../rpc-error.js';
import type { EngineOptions } from './synchronous.js';
import type { Session } from '../nodes/sessions.js';
import { checkpointDirName, writeCheckpoint } from '../store/checkpoints.js';
import type { UpdateRow } from '../store/schema.js';
import type { ServerOptimizerState } from '../strategies/server-optimizers.js';

export type FedBuffSpec = Extract<StrategySpec, { name: 'fedbuff' }>;

interface BufferedTask {
  task: Task;
  sessionId: string;
  nodeId: string;
  /** The published model the task trains: task.round = baseVersion + 1. */
  baseVersion: number;
  deadline: number;
  state: 'assigned' | 'receiving';
}

type Buffered = AcceptedUpdate & { baseVersion: number };

/** Uploads for tasks that ended this long ago hear why, instead of "unknown task". */
const ENDED_TASKS_REMEMBERED = 10_000;

export class BufferedEngine implements Engine {
  private readonly spec: FedBuffSpec;
  private readonly concurrency: number;
  /** Every model an accepted update may be based on: the last max_staleness + 1 published. */
  private readonly served: ServedModels;
  /** The last published model's version (= the round that committed it; 0 is the initial model). */
  private version: number;
  private previousGlobal: Float32Array | undefined;
  private serverState: ServerOptimizerState | undefined;
  private readonly tasks = new Map<string, BufferedTask>();
  /** Why a task is no longer open, for uploads and declines that come after. */
  private readonly ended = new Map<string, string>();
  /** Each node's last task's base version: a node trains each published model at most once, since its seed would repeat. */
  private readonly lastBase = new Map<string, number>();
  private buffer: Buffered[] = [];
  private refused: UpdateRow[] = [];
  /** Aggregation was refused with this many inputs (e.g. Krum after pre-checks); wait for more before retrying. */
  private refusedAt = 0;
  private bufferStartedAt = Date.now();
  private issuedSinceCommit = 0;
  private readonly expectedBytes: number;
  private readonly modelJson: string;
  private readonly modelJsonSha256: string;
  private stopped = false;
  private wake: () => void = () => {};

  constructor(private readonly o: EngineOptions) {
    if (o.experiment.strategy.name !== 'fedbuff') throw new Error('the buffered engine runs the fedbuff strategy only');
    this.spec = o.experiment.strategy;
    this.concurrency = this.spec.concurrency ?? o.experiment.selection.nodes_per_round;
    this.expectedBytes = manifestBytes(o.manifest);
    if (o.initialWeights.length * 4 !== this.expectedBytes) {
      throw new Error(`initial weights have ${o.initialWeights.length} values, manifest needs ${this.expectedBytes / 4}`);
    }
    this.modelJson = JSON.stringify(o.topology);
    this.modelJsonSha256 = modelJsonSha256(this.modelJson);
    this.served = new ServedModels(this.spec.max_staleness + 1);
    this.version = (o.startRound ?? 1) - 1;
    this.previousGlobal = o.previousWeights;
    this.serverState = o.serverState;
    this.served.publish(o.initialWeights);
  }

  modelBytes(sha256: string): Buffer {
    return this.served.bytes(sha256);
  }

  manifestForWire(): TensorSpec[] {
    return manifestForWire(this.o.manifest);
  }

  uploadDeadline(taskId: string): number {
    return (this.tasks.get(taskId)?.deadline ?? Date.now()) + 10_000;
  }

  stop(): void {
    this.stopped = true;
    this.wake();
  }

  async run(): Promise<RoundRecord[]> {
    const { experiment, checkpointsDir, topology, manifest } = this.o;
    if (this.version === 0) writeCheckpoint(checkpointsDir, checkpointDirName(0), topology, manifest, this.served.current.weights);
    await this.waitForFirstNodes();
    // Timed from the first task, as a synchronous round is from its selection: start-up is not the first model's time.
    this.bufferStartedAt = Date.now();
    const records: RoundRecord[] = [];
    const leaseCheck = setInterval(() => this.dropDeadNodes(), 1000);
    try {
      while (!this.stopped && this.version < experiment.rounds) {
        this.expireTasks();
        this.issueTasks();
        if (this.buffer.length >= this.spec.buffer_size && this.buffer.length > this.refusedAt) {
          const record = await this.flush();
          if (record) records.push(record);
          continue;
        }
        // Polled as well as woken: tasks expire and nodes come idle without telling the engine.
        await sleepUnlessWoken(200, (wake) => (this.wake = wake));
      }
    } finally {
      clearInterval(leaseCheck);
    }
    for (const taskId of this.tasks.keys()) this.endTask(taskId, 'the run finished');
    this.o.sessions.finish();
    return records;
  }

  /** Until the nodes a simulation started are connected (or the grace passes), so the first tasks are not all given to the fastest starters. */
  private async waitForFirstNodes(): Promise<void> {
    const wanted = Math.max(1, Math.min(this.concurrency, this.o.firstRoundNodes ?? this.concurrency));
    const since = Date.now();
    const grace = this.o.firstRoundGraceMs ?? this.o.selectionGraceMs ?? 10_000;
    while (!this.stopped) {
      this.o.sessions.expire();
      const idle = this.eligible(this.o.sessions.idle()).length;
      if (idle >= wanted || (idle > 0 && Date.now() - since >= grace)) return;
      this.o.onEvent?.({ type: 'waiting-for-nodes', connected: idle, needed: wanted });
      await sleepUnlessWoken(250, (wake) => (this.wake = wake));
    }
  }

  private eligible(sessions: Session[]): Session[] {
    return eligibleSessions(this.o.store, this.o.experiment, sessions);
  }

  /** Gives idle nodes tasks against the current model while fewer than C are in flight. */
  private issueTasks(): void {
    const free = this.concurrency - this.tasks.size;
    if (free <= 0) return;
    const { experiment, store, runId, sessions } = this.o;
    const idle = this.eligible(sessions.idle())
      .filter((s) => this.lastBase.get(s.nodeId) !== this.version)
      .sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
    if (idle.length === 0) return;
    new Rng((experiment.seed * 1_000_003 + this.version * 101 + this.issuedSinceCommit) >>> 0).shuffle(idle);
    const round = this.version + 1;
    const training = this.o.strategy.configureTraining(round);
    const signing = { ...this.o, modelJson: this.modelJson, modelJsonSha256: this.modelJsonSha256 };
    for (const session of idle.slice(0, free)) {
      const issuedAt = Date.now();
      const deadline = issuedAt + experiment.selection.deadline_seconds * 1000;
      const task = signedTask(signing, session, round, this.served.current.sha256, training, deadline);
      const taskId = task.task_id!;
      this.tasks.set(taskId, { task, sessionId: session.id, nodeId: session.nodeId, baseVersion: this.version, deadline, state: 'assigned' });
      this.lastBase.set(session.nodeId, this.version);
      this.issuedSinceCommit++;
      // Attempt 0 always: a published model is never abandoned, only lost in a crash before it committed anything.
      store.recordTask({ taskId, runId, round, attempt: 0, nodeId: session.nodeId, issuedAt, deadline });
      sessions.assign(session, task);
      crashPoint('selection', round);
    }
  }

  private endTask(taskId: string, why: string): void {
    this.tasks.delete(taskId);
    this.o.sessions.release(taskId);
    this.ended.set(taskId, why);
    for (const key of this.ended.keys()) {
      if (this.ended.size <= ENDED_TASKS_REMEMBERED) break;
      this.ended.delete(key);
    }
  }

  private expireTasks(): void {
    const now = Date.now();
    for (const [taskId, t] of this.tasks) {
      // An upload under way gets the transfer slack server.ts allows it.
      const limit = t.state === 'receiving' ? t.deadline + 10_000 : t.deadline;
      if (now > limit) this.endTask(taskId, `task expired at its deadline (${new Date(t.deadline).toISOString()})`);
    }
  }

  private dropDeadNodes(): void {
    const dead = new Set(this.o.sessions.expire().map((s) => s.id));
    if (dead.size === 0) return;
    for (const [taskId, t] of this.tasks) {
      if (t.state === 'assigned' && dead.has(t.sessionId)) this.endTask(taskId, "task dropped: the node's session expired");
    }
    this.wake();
  }

  taskStillWanted(taskId: string): boolean {
    return this.tasks.has(taskId);
  }

  /** Whether the task is still running or its update waits in the buffer (its outcome is not final). */
  taskPending(taskId: string): boolean {
    return this.tasks.has(taskId) || this.buffer.some((u) => u.taskId === taskId);
  }

  declineTask(session: Session, taskId: string, reason: string, kind: string): void {
    const t = this.tasks.get(taskId);
    if (!t) {
      const why = this.ended.get(taskId);
      if (why !== undefined) throw precondition(`${why}; there is nothing to decline`);
      throw notFound(`unknown task ${JSON.stringify(taskId)}`);
    }
    if (t.nodeId !== session.nodeId) throw new RpcError(status.PERMISSION_DENIED, `task ${taskId} was not assigned to this node`);
    if (t.state !== 'assigned') throw alreadyExists(`task ${taskId} was already answered (${t.state})`);
    this.o.store.recordDecline(taskId, t.nodeId, reason, kind);
    this.endTask(taskId, 'task declined');
    this.o.onEvent?.({ type: 'task-declined', round: t.task.round!, nodeId: t.nodeId, reason });
    this.wake();
  }

  beginSubmission(session: Session, meta: UpdateMeta__Output): number {
    if (meta.experiment_id !== this.o.runId) {
      throw notFound(`unknown experiment ${JSON.stringify(meta.experiment_id)}; this aggregator runs ${this.o.runId}`);
    }
    const t = this.tasks.get(meta.task_id);
    if (!t) {
      const why = this.ended.get(meta.task_id);
      if (why !== undefined) throw precondition(`${why}; the update came too late`);
      throw notFound(`unknown task ${JSON.stringify(meta.task_id)}`);
    }
    const node = this.o.store.node(session.nodeId);
    if (node?.status === 'banned') throw new RpcError(status.PERMISSION_DENIED, `node ${session.nodeId} is banned: ${node.statusReason}`);
    if (t.nodeId !== session.nodeId) throw new RpcError(status.PERMISSION_DENIED, `task ${meta.task_id} was not assigned to this node`);
    if (meta.round !== t.task.round) throw precondition(`task ${meta.task_id} belongs to round ${t.task.round}, not ${meta.round}`);
    if (t.state !== 'assigned') throw alreadyExists(`task ${meta.task_id} was already answered (${t.state})`);
    if (meta.base_model_sha256 !== t.task.base_model_sha256) {
      throw precondition(`base model ${meta.base_model_sha256} is not the one task ${meta.task_id} named (${t.task.base_model_sha256})`);
    }
    const staleness = this.version - t.baseVersion;
    if (staleness > this.spec.max_staleness) {
      throw this.reject(t, meta, precondition(`too stale: ${staleness} models were published since its base model; max_staleness is ${this.spec.max_staleness}`));
    }
    const problem = shapeProblem(this.o.manifest, this.expectedBytes, meta);
    if (problem) throw this.reject(t, meta, problem);
    t.state = 'receiving';
    crashPoint('mid-upload', this.version + 1);
    return this.expectedBytes;
  }

  abortSubmission(meta: UpdateMeta__Output): void {
    const t = this.tasks.get(meta.task_id);
    if (t?.state === 'receiving') t.state = 'assigned';
  }

  completeSubmission(session: Session, meta: UpdateMeta__Output, seal: UpdateSeal__Output | undefined, delta: Float32Array, receivedSha: string): void {
    const t = this.tasks.get(meta.task_id);
    if (!t || t.state !== 'receiving') throw precondition(`task ${meta.task_id} expired while the update was uploading`);
    const accepted = acceptSealedUpdate(this.o, session, meta, seal, delta, receivedSha);
    if ('error' in accepted) throw this.reject(t, meta, accepted.error, receivedSha);
    this.buffer.push({ ...accepted.update, baseVersion: t.baseVersion });
    this.endTask(meta.task_id, 'task already answered');
    this.updateEvent(t, true, '');
    this.wake();
  }

  private reject(t: BufferedTask, meta: UpdateMeta__Output, error: RpcError, updateSha = ''): RpcError {
    // Recorded with the next published model (its round fixed when that commits).
    this.refused.push(refusedRow(this.o.runId, 0, t.task.task_id!, t.nodeId, meta, error.message, updateSha));
    this.endTask(t.task.task_id!, 'task already answered');
    this.updateEvent(t, false, error.message);
    this.wake();
    return error;
  }

  private updateEvent(t: BufferedTask, accepted: boolean, reason: string): void {
    this.o.onEvent?.({
      type: 'update',
      round: this.version + 1,
      nodeId: t.nodeId,
      accepted,
      reason,
      received: this.buffer.length,
      selected: this.spec.buffer_size,
    });
  }

  /** Aggregates the buffer onto the current model and publishes the result as the next version. */
  private async flush(): Promise<RoundRecord | undefined> {
    const round = this.version + 1;
    const { max_staleness } = this.spec;
    // Taken out first: uploads that finish while the model is evaluated go into the next buffer.
    const taken = this.buffer;
    this.buffer = [];
    const tooStale = taken.filter((u) => this.version - u.baseVersion > max_staleness);
    const fresh = taken.filter((u) => this.version - u.baseVersion <= max_staleness);
    this.refused.push(
      ...tooStale.map((u) =>
        refusedRow(this.o.runId, 0, u.taskId, u.nodeId, u.meta, `too stale: ${this.version - u.baseVersion} models were published since its base model; max_staleness is ${max_staleness}`, u.updateSha256),
      ),
    );
    if (fresh.length < this.spec.buffer_size) {
      this.buffer = [...fresh, ...this.buffer];
      return undefined;
    }
    const inputs: AcceptedUpdate[] = fresh.map((u) => ({ ...u, staleness: this.version - u.baseVersion })).sort(byNodeThenTask);
    const global = this.served.current;
    let step;
    try {
      step = this.o.strategy.aggregate(global.weights, inputs, { previousGlobal: this.previousGlobal, serverState: this.serverState });
    } catch (err) {
      // e.g. Krum's n > 2f + 2 failing after the pre-checks rejected some: wait for a fuller buffer.
      if (!(err instanceof AggregationError)) throw err;
      this.refusedAt = fresh.length;
      this.buffer = [...fresh, ...this.buffer];
      return undefined;
    }
    const refused = this.refused.map((r) => ({ ...r, round }));
    this.refused = [];
    const { record, banned } = await commitAggregation(this.o, {
      round,
      attempt: 0,
      selected: this.issuedSinceCommit,
      startedAt: this.bufferStartedAt,
      previousModelSha256: global.sha256,
      updates: inputs,
      step,
      refused,
    });
    this.previousGlobal = global.weights;
    this.serverState = step.serverState;
    this.served.publish(step.weights);
    this.version = round;
    this.refusedAt = 0;
    this.issuedSinceCommit = 0;
    this.bufferStartedAt = Date.now();
    for (const b of banned) this.o.onEvent?.({ type: 'node-banned', round, nodeId: b.nodeId, reason: b.ban! });
    this.o.onEvent?.({ type: 'round-committed', record });
    return record;
  }
}

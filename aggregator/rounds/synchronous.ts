// The round state machine: select → training → aggregating → committed |
// abandoned. Every decision (who was asked, who answered, each verdict and
// why) is recorded, because evaluators replay runs later.
import { status } from '@grpc/grpc-js';
import type { Experiment } from '../experiment/schema.js';
import { manifestBytes, type TensorEntry } from '../../core/tensor-codec.js';
import { Rng } from '../../core/rng.js';
import type { Identity } from '../../core/signing/keys.js';
import { modelJsonSha256 } from '../../core/signing/layouts.js';
import type { Task } from '../../proto/generated/crowdfl/v1/Task.js';
import type { TensorSpec } from '../../proto/generated/crowdfl/v1/TensorSpec.js';
import type { UpdateMeta__Output } from '../../proto/generated/crowdfl/v1/UpdateMeta.js';
import type { UpdateSeal__Output } from '../../proto/generated/crowdfl/v1/UpdateSeal.js';
import { crashPoint } from '../crash-points.js';
import {
  acceptSealedUpdate,
  byNodeThenTask,
  eligibleSessions,
  sleepUnlessWoken,
  commitAggregation,
  manifestForWire,
  refusedRow,
  ServedModels,
  shapeProblem,
  signedTask,
  updateRow,
  type AcceptedUpdate,
  type Engine,
  type RoundRecord,
} from './engine.js';
import { AggregationError } from '../robust/verdict.js';
import { alreadyExists, notFound, precondition, RpcError } from '../rpc-error.js';
import type { Session, Sessions } from '../nodes/sessions.js';
import { checkpointDirName, writeCheckpoint } from '../store/checkpoints.js';
import type { RunStore } from '../store/run-store.js';
import type { UpdateBlobs } from '../store/update-blobs.js';
import type { ServerOptimizerState } from '../strategies/server-optimizers.js';
import type { UpdateRow } from '../store/schema.js';
import type { Strategy, StrategyStep } from '../strategies/strategy.js';

export type { RoundRecord } from './engine.js';

export type EngineEvent =
  | { type: 'waiting-for-nodes'; connected: number; needed: number }
  | { type: 'round-started'; round: number; attempt: number; selected: number; deadline: number }
  | { type: 'update'; round: number; nodeId: string; accepted: boolean; reason: string; received: number; selected: number }
  | { type: 'round-committed'; record: RoundRecord }
  | { type: 'node-banned'; round: number; nodeId: string; reason: string }
  | { type: 'task-declined'; round: number; nodeId: string; reason: string }
  | { type: 'round-abandoned'; round: number; attempt: number; reason: string };

export interface EngineOptions {
  experiment: Experiment;
  runId: string;
  identity: Identity;
  topology: object;
  manifest: readonly TensorEntry[];
  initialWeights: Float32Array;
  strategy: Strategy;
  store: RunStore;
  sessions: Sessions;
  checkpointsDir: string;
  /** Where accepted updates' bytes are kept for replay; absent when the experiment records none. */
  updateBlobs?: UpdateBlobs;
  evaluate: (weights: Float32Array) => Promise<{ accuracy: number; loss: number }>;
  onEvent?: (event: EngineEvent) => void;
  /** How long to wait for a full selection before starting with a quorum. */
  selectionGraceMs?: number;
  /** The same, for the run's first round, when nodes may still be starting up. */
  firstRoundGraceMs?: number;
  /**
   * How many nodes the first round waits for (within firstRoundGraceMs) when more are expected than it
   * selects: a simulation knows how many it started. Selecting among the first to connect would make
   * who trains round 1 depend on start-up order, and the seeded selection unrepeatable.
   */
  firstRoundNodes?: number;
  maxAttemptsPerRound?: number;
  /** Set when resuming a run: the first round to run (initialWeights are the model the round before committed). */
  startRound?: number;
  /** When resuming: the model before initialWeights, for the strategy's history. */
  previousWeights?: Float32Array;
  /** When resuming: the server optimizer's state the last committed round left. */
  serverState?: ServerOptimizerState;
}

type TaskState = 'assigned' | 'receiving' | 'accepted' | 'rejected' | 'declined' | 'dropped';

interface OpenTask {
  task: Task;
  sessionId: string;
  nodeId: string;
  state: TaskState;
}

interface OpenRound {
  round: number;
  attempt: number;
  startedAt: number;
  deadline: number;
  tasks: Map<string, OpenTask>;
  accepted: AcceptedUpdate[];
  rejected: UpdateRow[];
  wake: () => void;
}

const CLOSED_ROUNDS_REMEMBERED = 10;

export class RoundEngine implements Engine {
  private previousGlobal: Float32Array | undefined;
  private serverState: ServerOptimizerState | undefined;
  /** Models nodes may still be downloading: the current one and the one before. */
  private readonly served = new ServedModels(2);
  private open: OpenRound | undefined;
  private readonly closedTasks = new Map<string, number>();
  private readonly expectedBytes: number;
  private stopped = false;
  private stopWaiting: () => void = () => {};
  /** The model's topology as sent in every task, and its hash as signed in every task. */
  private readonly modelJson: string;
  private readonly modelJsonSha256: string;

  constructor(private readonly o: EngineOptions) {
    this.expectedBytes = manifestBytes(o.manifest);
    if (o.initialWeights.length * 4 !== this.expectedBytes) {
      throw new Error(`initial weights have ${o.initialWeights.length} values, manifest needs ${this.expectedBytes / 4}`);
    }
    this.modelJson = JSON.stringify(o.topology);
    this.modelJsonSha256 = modelJsonSha256(this.modelJson);
    this.previousGlobal = o.previousWeights;
    this.serverState = o.serverState;
    this.served.publish(o.initialWeights);
  }

  private get global(): { weights: Float32Array; sha256: string } {
    return this.served.current;
  }

  get globalSha256(): string {
    return this.global.sha256;
  }

  modelBytes(sha256: string): Buffer {
    return this.served.bytes(sha256);
  }

  manifestForWire(): TensorSpec[] {
    return manifestForWire(this.o.manifest);
  }

  /** When an upload for this task must have finished: the round deadline, plus slack for the transfer. */
  uploadDeadline(taskId: string): number {
    const open = this.open;
    return (open?.tasks.has(taskId) ? open.deadline : Date.now()) + 10_000;
  }

  stop(): void {
    this.stopped = true;
    this.open?.wake();
    this.stopWaiting();
  }

  async run(): Promise<RoundRecord[]> {
    const { experiment, checkpointsDir, topology, manifest } = this.o;
    const startRound = this.o.startRound ?? 1;
    if (startRound === 1) writeCheckpoint(checkpointsDir, checkpointDirName(0), topology, manifest, this.global.weights);
    const records: RoundRecord[] = [];
    const maxAttempts = this.o.maxAttemptsPerRound ?? 20;
    for (let round = startRound; round <= experiment.rounds && !this.stopped; round++) {
      let record: RoundRecord | undefined;
      // A resumed round continues the attempt numbering of the run it belongs to.
      const firstAttempt = this.o.store.nextAttempt(this.o.runId, round);
      for (let attempt = firstAttempt; !record && !this.stopped; attempt++) {
        if (attempt - firstAttempt >= maxAttempts) {
          throw new Error(`round ${round} was abandoned ${maxAttempts} times in a row; giving up`);
        }
        const first = round === startRound && attempt === firstAttempt;
        await this.waitForNodes(first ? this.o.firstRoundGraceMs : undefined, first);
        if (this.stopped) break;
        record = await this.runAttempt(round, attempt);
      }
      if (record) records.push(record);
    }
    this.o.sessions.finish();
    return records;
  }

  private async waitForNodes(graceMs: number | undefined, firstRound: boolean): Promise<void> {
    const { selection } = this.o.experiment;
    const grace = graceMs ?? this.o.selectionGraceMs ?? 10_000;
    const wanted = firstRound ? Math.max(this.selectionSize(), this.o.firstRoundNodes ?? 0) : this.selectionSize();
    const since = Date.now();
    for (;;) {
      this.o.sessions.expire();
      const idle = this.eligibleIdle().length;
      if (idle >= wanted) return;
      // Past the run's first round nodes are not starting up: when every eligible node is idle, waiting brings no one.
      if (!firstRound && idle >= selection.min_updates && idle === this.eligible(this.o.sessions.all()).length) return;
      if (idle >= selection.min_updates && Date.now() - since >= grace) return;
      if (this.stopped) return;
      this.o.onEvent?.({ type: 'waiting-for-nodes', connected: idle, needed: wanted });
      await sleepUnlessWoken(250, (wake) => (this.stopWaiting = wake));
    }
  }

  /** Idle sessions of nodes that are not banned and whose reputation allows selection. */
  private eligibleIdle(): Session[] {
    return this.eligible(this.o.sessions.idle());
  }

  private eligible(sessions: Session[]): Session[] {
    return eligibleSessions(this.o.store, this.o.experiment, sessions);
  }

  private select(round: number, attempt: number): Session[] {
    const idle = this.eligibleIdle().sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
    const rng = new Rng((this.o.experiment.seed * 1_000_003 + round * 101 + attempt) >>> 0);
    rng.shuffle(idle);
    return idle.slice(0, this.selectionSize());
  }

  /** How many nodes a round asks: the target, over-selected to make up for those that will drop. */
  private selectionSize(): number {
    const { nodes_per_round, over_selection } = this.o.experiment.selection;
    return Math.ceil(nodes_per_round * over_selection - 1e-9);
  }

  private async runAttempt(round: number, attempt: number): Promise<RoundRecord | undefined> {
    const { experiment, sessions, store, runId } = this.o;
    const selected = this.select(round, attempt);
    const startedAt = Date.now();
    const deadline = startedAt + experiment.selection.deadline_seconds * 1000;
    const training = this.o.strategy.configureTraining(round);
    let wake: () => void = () => {};
    const open: OpenRound = {
      round,
      attempt,
      startedAt,
      deadline,
      tasks: new Map(),
      accepted: [],
      rejected: [],
      wake: () => wake(),
    };
    this.open = open;
    for (const session of selected) {
      // One seed per node and round, the same in every attempt: a round retried (or re-run after
      // a crash) asks each node for the same update it would have computed the first time.
      const task = signedTask(this.taskSigning(), session, round, this.global.sha256, training, deadline);
      open.tasks.set(task.task_id!, { task, sessionId: session.id, nodeId: session.nodeId, state: 'assigned' });
      store.recordTask({ taskId: task.task_id!, runId, round, attempt, nodeId: session.nodeId, issuedAt: startedAt, deadline });
      sessions.assign(session, task);
      crashPoint('selection', round);
    }
    this.o.onEvent?.({ type: 'round-started', round, attempt, selected: selected.length, deadline });

    // Wait until the target number of updates is in, every task is answered, or the deadline passes.
    const target = experiment.selection.nodes_per_round;
    const leaseCheck = setInterval(() => this.dropDeadNodes(), 1000);
    try {
      while (!this.stopped && Date.now() < deadline && this.pending(open) > 0 && open.accepted.length < target) {
        await sleepUnlessWoken(Math.max(0, deadline - Date.now()), (w) => (wake = w));
      }
    } finally {
      clearInterval(leaseCheck);
    }
    // Closed: later uploads for this round get "round closed".
    this.open = undefined;
    // Remembered for a few rounds so a straggler hears "round N closed"; older ids are just unknown.
    for (const [taskId, closedIn] of this.closedTasks) if (closedIn < round - CLOSED_ROUNDS_REMEMBERED) this.closedTasks.delete(taskId);
    for (const [taskId, t] of open.tasks) {
      this.closedTasks.set(taskId, round);
      sessions.release(taskId);
      if (t.state === 'assigned' || t.state === 'receiving') t.state = 'dropped';
    }
    if (this.stopped) return undefined;
    return open.accepted.length >= experiment.selection.min_updates
      ? this.commit(open, selected.length)
      : this.abandon(open, selected.length);
  }

  private taskSigning() {
    return { ...this.o, modelJson: this.modelJson, modelJsonSha256: this.modelJsonSha256 };
  }

  private pending(open: OpenRound): number {
    let n = 0;
    for (const t of open.tasks.values()) if (t.state === 'assigned' || t.state === 'receiving') n++;
    return n;
  }

  private dropDeadNodes(): void {
    const dead = new Set(this.o.sessions.expire().map((s) => s.id));
    const open = this.open;
    if (!open || dead.size === 0) return;
    for (const t of open.tasks.values()) {
      if (t.state === 'assigned' && dead.has(t.sessionId)) t.state = 'dropped';
    }
    open.wake();
  }

  /** Is the node still wanted on this task (heartbeats ask)? */
  taskStillWanted(taskId: string): boolean {
    const t = this.open?.tasks.get(taskId);
    return t !== undefined && (t.state === 'assigned' || t.state === 'receiving');
  }

  /** Whether the task's round is still open (its outcome is not final). */
  taskPending(taskId: string): boolean {
    return this.open?.tasks.has(taskId) ?? false;
  }

  /** The node will not answer its task: free the slot now rather than at the deadline. */
  declineTask(session: Session, taskId: string, reason: string, kind: string): void {
    const open = this.open;
    const t = open?.tasks.get(taskId);
    if (!open || !t) {
      const closedRound = this.closedTasks.get(taskId);
      if (closedRound !== undefined) throw precondition(`round ${closedRound} already closed; there is nothing to decline`);
      throw notFound(`unknown task ${JSON.stringify(taskId)}`);
    }
    if (t.nodeId !== session.nodeId) throw new RpcError(status.PERMISSION_DENIED, `task ${taskId} was not assigned to this node`);
    if (t.state !== 'assigned') throw alreadyExists(`task ${taskId} was already answered (${t.state})`);
    t.state = 'declined';
    this.o.store.recordDecline(taskId, t.nodeId, reason, kind);
    this.o.sessions.release(taskId);
    this.o.onEvent?.({ type: 'task-declined', round: open.round, nodeId: t.nodeId, reason });
    open.wake();
  }

  /**
   * Checks an upload's metadata before any bytes are accepted, so a wrong or
   * late upload costs the aggregator nothing. Returns the bytes to expect.
   */
  beginSubmission(session: Session, meta: UpdateMeta__Output): number {
    if (meta.experiment_id !== this.o.runId) {
      throw notFound(`unknown experiment ${JSON.stringify(meta.experiment_id)}; this aggregator runs ${this.o.runId}`);
    }
    const open = this.open;
    const t = open?.tasks.get(meta.task_id);
    if (!open || !t) {
      const closedRound = this.closedTasks.get(meta.task_id);
      if (closedRound !== undefined) throw precondition(`round ${closedRound} closed; the update came too late`);
      throw notFound(`unknown task ${JSON.stringify(meta.task_id)}`);
    }
    const node = this.o.store.node(session.nodeId);
    if (node?.status === 'banned') {
      throw new RpcError(status.PERMISSION_DENIED, `node ${session.nodeId} is banned: ${node.statusReason}`);
    }
    if (t.nodeId !== session.nodeId) {
      throw new RpcError(status.PERMISSION_DENIED, `task ${meta.task_id} was not assigned to this node`);
    }
    if (meta.round !== open.round) throw precondition(`task ${meta.task_id} belongs to round ${open.round}, not ${meta.round}`);
    if (t.state !== 'assigned') throw alreadyExists(`task ${meta.task_id} was already answered (${t.state})`);
    if (meta.base_model_sha256 !== this.global.sha256) {
      throw precondition(`stale base model ${meta.base_model_sha256}; round ${open.round} trains ${this.global.sha256}`);
    }
    const problem = shapeProblem(this.o.manifest, this.expectedBytes, meta);
    if (problem) throw this.reject(open, t, meta, problem);
    t.state = 'receiving';
    crashPoint('mid-upload', open.round);
    return this.expectedBytes;
  }

  /** The upload's stream broke before it finished: the node may try again. */
  abortSubmission(meta: UpdateMeta__Output): void {
    const t = this.open?.tasks.get(meta.task_id);
    if (t?.state === 'receiving') t.state = 'assigned';
  }

  /**
   * Checks the seal against the bytes received (hashed as they streamed in)
   * and takes the update into the round, or records why not.
   */
  completeSubmission(session: Session, meta: UpdateMeta__Output, seal: UpdateSeal__Output | undefined, delta: Float32Array, receivedSha: string): void {
    const open = this.open;
    const t = open?.tasks.get(meta.task_id);
    if (!open || !t || t.state !== 'receiving') {
      throw precondition(`round ${meta.round} closed while the update was uploading`);
    }
    const accepted = acceptSealedUpdate(this.o, session, meta, seal, delta, receivedSha);
    if ('error' in accepted) throw this.reject(open, t, meta, accepted.error, receivedSha);
    t.state = 'accepted';
    open.accepted.push(accepted.update);
    this.o.sessions.release(meta.task_id);
    this.o.onEvent?.({
      type: 'update',
      round: open.round,
      nodeId: session.nodeId,
      accepted: true,
      reason: '',
      received: open.accepted.length,
      selected: open.tasks.size,
    });
    open.wake();
  }

  /** Records a refused upload as a rejected verdict of this round and returns the error to send. */
  private reject(open: OpenRound, t: OpenTask, meta: UpdateMeta__Output, error: RpcError, updateSha = ''): RpcError {
    t.state = 'rejected';
    open.rejected.push(refusedRow(this.o.runId, open.round, t.task.task_id!, t.nodeId, meta, error.message, updateSha));
    this.o.sessions.release(t.task.task_id!);
    this.o.onEvent?.({
      type: 'update',
      round: open.round,
      nodeId: t.nodeId,
      accepted: false,
      reason: error.message,
      received: open.accepted.length,
      selected: open.tasks.size,
    });
    open.wake();
    return error;
  }

  private async commit(open: OpenRound, selected: number): Promise<RoundRecord | undefined> {
    const { strategy } = this.o;
    // Sorted so the aggregate does not depend on arrival order.
    const updates = [...open.accepted].sort(byNodeThenTask);
    let step: StrategyStep;
    try {
      step = strategy.aggregate(this.global.weights, updates, { previousGlobal: this.previousGlobal, serverState: this.serverState });
    } catch (err) {
      // e.g. Krum's n > 2f + 2 failing because the pre-checks rejected too many updates.
      if (err instanceof AggregationError) return this.abandon(open, selected, `aggregation refused: ${err.message}`);
      throw err;
    }
    const { record, banned } = await commitAggregation(this.o, {
      round: open.round,
      attempt: open.attempt,
      selected,
      startedAt: open.startedAt,
      previousModelSha256: this.global.sha256,
      updates,
      step,
      refused: open.rejected,
    });
    this.previousGlobal = this.global.weights;
    this.serverState = step.serverState;
    this.served.publish(step.weights);
    for (const b of banned) this.o.onEvent?.({ type: 'node-banned', round: open.round, nodeId: b.nodeId, reason: b.ban! });
    this.o.onEvent?.({ type: 'round-committed', record });
    return record;
  }

  private abandon(open: OpenRound, selected: number, why?: string): undefined {
    const { store, runId, experiment } = this.o;
    const count = (state: TaskState) => [...open.tasks.values()].filter((t) => t.state === state).length;
    const reason =
      why ??
      `${open.accepted.length} of ${selected} updates when the round closed (deadline passed, or every task answered or dropped): ` +
        `${count('declined')} declined, ${count('dropped')} dropped, ${count('rejected')} rejected; quorum is ${experiment.selection.min_updates}`;
    const closedAt = Date.now();
    store.commitRound({
      round: {
        runId,
        round: open.round,
        attempt: open.attempt,
        status: 'abandoned',
        reason,
        selected,
        participants: 0,
        examples: 0,
        modelSha256: this.global.sha256,
        startedAt: open.startedAt,
        closedAt,
        seconds: (closedAt - open.startedAt) / 1000,
        overheadSeconds: 0,
      },
      updates: [
        ...open.accepted.map((u) =>
          updateRow(runId, open.round, u, { verdict: 'rejected', weight: 0, reason: `round abandoned: ${reason}` }),
        ),
        ...open.rejected,
      ],
    });
    this.o.onEvent?.({ type: 'round-abandoned', round: open.round, attempt: open.attempt, reason });
    return undefined;
  }
}

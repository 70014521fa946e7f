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
import type { StrategySpec } from '../experiment/schema.js';
import { Rng } from '../../core/rng.js';
import { commitAggregation } from './commit.js';
import { byNodeThenTask, eligibleSessions, sleepUnlessWoken, type EngineOptions, type RoundRecord } from './engine.js';
import { ServedModels } from './served-models.js';
import { DeskEngine, refusedRow, UploadDesk, UPLOAD_SLACK_MS, type AcceptedUpdate, type IssuedTask, type TaskEnd } from './uploads.js';
import { AggregationError } from '../robust/verdict.js';
import { echo, precondition } from '../rpc-error.js';
import type { Session } from '../nodes/sessions.js';
import { checkpointDirName, writeCheckpoint } from '../store/checkpoints.js';
import type { UpdateRow } from '../store/schema.js';
import type { ServerOptimizerState } from '../strategies/server-optimizers.js';

export type FedBuffSpec = Extract<StrategySpec, { name: 'fedbuff' }>;

/** A task in flight. Ended tasks leave the map at once (their updates wait in the buffer). */
type BufferedTask = IssuedTask & {
  /** The published model the task trains: task.round = baseVersion + 1. */
  baseVersion: number;
};

type Buffered = AcceptedUpdate & { baseVersion: number };

/** What a late upload or decline hears about a task that ended, by how it ended. */
const WHY_ENDED: Record<TaskEnd['state'], string> = {
  accepted: 'task already answered',
  rejected: 'task already answered',
  declined: 'task declined',
  dropped: "task dropped: the node's session expired",
};

/** Why an update based on a model `staleness` publications old is refused, at upload or when its buffer is aggregated. */
function tooStale(staleness: number, maxStaleness: number): string {
  return `too stale: ${staleness} models were published since its base model; max_staleness is ${maxStaleness}`;
}

/** Uploads for tasks that ended this long ago hear why, instead of "unknown task". */
const ENDED_TASKS_REMEMBERED = 10_000;

export class BufferedEngine extends DeskEngine<BufferedTask> {
  private readonly spec: FedBuffSpec;
  private readonly concurrency: number;
  /** Every model an accepted update may be based on: the last max_staleness + 1 published. */
  protected readonly served: ServedModels;
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
  protected readonly desk: UploadDesk<BufferedTask>;
  private stopped = false;
  private wake: () => void = () => {};

  constructor(o: EngineOptions) {
    super(o);
    if (o.experiment.strategy.name !== 'fedbuff') throw new Error('the buffered engine runs the fedbuff strategy only');
    this.spec = o.experiment.strategy;
    this.concurrency = this.spec.concurrency ?? o.experiment.selection.nodes_per_round;
    this.desk = new UploadDesk<BufferedTask>(o, {
      find: (taskId) => this.tasks.get(taskId),
      held: () => this.tasks.values(),
      whyClosed: (taskId) => this.ended.get(taskId),
      // The update goes into the next model to be published, whatever model its task trained.
      roundNow: () => this.version + 1,
      progress: () => ({ received: this.buffer.length, selected: this.spec.buffer_size }),
      // Tasks issued between two publications train different models: each names its own.
      wrongBaseModel: (t, meta) =>
        precondition(`base model ${echo(meta.base_model_sha256)} is not the one task ${echo(meta.task_id)} named (${t.task.base_model_sha256})`),
      endedWhileUploading: (meta) => precondition(`task ${echo(meta.task_id)} expired while the update was uploading`),
      // Only FedBuff lets models be published while a task is out, so only it can be handed an update too old to use.
      engineRefusal: (t) => {
        const staleness = this.version - t.baseVersion;
        if (staleness <= this.spec.max_staleness) return undefined;
        return precondition(tooStale(staleness, this.spec.max_staleness));
      },
      ended: (t, end) => {
        if (end.state === 'accepted') this.buffer.push({ ...end.update, baseVersion: t.baseVersion });
        // Recorded with the next published model (its round restamped when that commits).
        if (end.state === 'rejected') this.refused.push(end.row);
        this.forget(t.task.task_id!, WHY_ENDED[end.state]);
      },
      wake: () => this.wake(),
    });
    this.served = new ServedModels(this.spec.max_staleness + 1);
    this.version = (o.startRound ?? 1) - 1;
    this.previousGlobal = o.previousWeights;
    this.serverState = o.serverState;
    this.served.publish(o.initialWeights);
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
    const leaseCheck = setInterval(() => this.desk.dropDeadNodes(), 1000);
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
    const { experiment, sessions } = this.o;
    const idle = this.eligible(sessions.idle())
      .filter((s) => this.lastBase.get(s.nodeId) !== this.version)
      .sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
    if (idle.length === 0) return;
    new Rng((experiment.seed * 1_000_003 + this.version * 101 + this.issuedSinceCommit) >>> 0).shuffle(idle);
    const round = this.version + 1;
    const training = this.o.strategy.configureTraining(round);
    for (const session of idle.slice(0, free)) {
      const issuedAt = Date.now();
      const deadline = issuedAt + experiment.selection.deadline_seconds * 1000;
      // Attempt 0 always: a published model is never abandoned, only lost in a crash before it committed anything.
      const issue = { round, attempt: 0, baseModelSha256: this.served.current.sha256, training, issuedAt, deadline };
      this.desk.issue(session, issue, (t) => this.tasks.set(t.task.task_id!, { ...t, baseVersion: this.version }));
      this.lastBase.set(session.nodeId, this.version);
      this.issuedSinceCommit++;
    }
  }

  /** Ends a task the node never answered (it expired, or the run finished). */
  private endTask(taskId: string, why: string): void {
    this.o.sessions.release(taskId);
    this.forget(taskId, why);
  }

  private forget(taskId: string, why: string): void {
    this.tasks.delete(taskId);
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
      const limit = t.state === 'receiving' ? t.deadline + UPLOAD_SLACK_MS : t.deadline;
      if (now > limit) this.endTask(taskId, `task expired at its deadline (${new Date(t.deadline).toISOString()})`);
    }
  }

  /** Whether the task is still running or its update waits in the buffer (its outcome is not final). */
  taskPending(taskId: string): boolean {
    return this.tasks.has(taskId) || this.buffer.some((u) => u.taskId === taskId);
  }

  /** Aggregates the buffer onto the current model and publishes the result as the next version. */
  private async flush(): Promise<RoundRecord | undefined> {
    const round = this.version + 1;
    const { max_staleness } = this.spec;
    // Taken out first: uploads that finish while the model is evaluated go into the next buffer.
    const taken = this.buffer;
    this.buffer = [];
    const stale = taken.filter((u) => this.version - u.baseVersion > max_staleness);
    const fresh = taken.filter((u) => this.version - u.baseVersion <= max_staleness);
    this.refused.push(
      ...stale.map((u) => refusedRow(this.o.runId, 0, u.taskId, u.nodeId, u.meta, tooStale(this.version - u.baseVersion, max_staleness), u.updateSha256)),
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

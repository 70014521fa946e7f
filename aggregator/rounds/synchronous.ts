// The round state machine: select → training → aggregating → committed |
// abandoned. Every decision (who was asked, who answered, each verdict and
// why) is recorded, because evaluators replay runs later.
import { ServedModels } from './served-models.js';
import { Rng } from '../../core/rng.js';
import { commitAggregation } from './commit.js';
import { byNodeThenTask, eligibleSessions, sleepUnlessWoken, type EngineOptions, type RoundRecord } from './engine.js';
import { DeskEngine, updateRow, UploadDesk, type AcceptedUpdate, type IssuedTask, type TaskState } from './uploads.js';
import { AggregationError } from '../robust/verdict.js';
import { echo, precondition } from '../rpc-error.js';
import type { Session } from '../nodes/sessions.js';
import { checkpointDirName, writeCheckpoint } from '../store/checkpoints.js';
import type { ServerOptimizerState } from '../strategies/server-optimizers.js';
import type { UpdateRow } from '../store/schema.js';
import type { StrategyStep } from '../strategies/strategy.js';

// Defined with the Engine interface; re-exported for the modules that know this engine's events by this path.
export type { EngineEvent, EngineOptions, RoundRecord } from './engine.js';

interface OpenRound {
  round: number;
  attempt: number;
  startedAt: number;
  deadline: number;
  tasks: Map<string, IssuedTask>;
  accepted: AcceptedUpdate[];
  rejected: UpdateRow[];
  wake: () => void;
}

const CLOSED_ROUNDS_REMEMBERED = 10;

export class RoundEngine extends DeskEngine<IssuedTask> {
  private previousGlobal: Float32Array | undefined;
  private serverState: ServerOptimizerState | undefined;
  /** Models nodes may still be downloading: the current one and the one before. */
  protected readonly served = new ServedModels(2);
  private open: OpenRound | undefined;
  private readonly closedTasks = new Map<string, number>();
  protected readonly desk: UploadDesk<IssuedTask>;
  private stopped = false;
  private stopWaiting: () => void = () => {};

  constructor(o: EngineOptions) {
    super(o);
    this.desk = new UploadDesk(o, {
      // Answered tasks stay in their round until it closes: a second upload hears "already answered (accepted)".
      find: (taskId) => this.open?.tasks.get(taskId),
      held: () => this.open?.tasks.values() ?? [],
      whyClosed: (taskId, asking) => {
        const closedRound = this.closedTasks.get(taskId);
        if (closedRound === undefined) return undefined;
        return asking === 'decline' ? `round ${closedRound} already closed` : `round ${closedRound} closed`;
      },
      roundNow: (t) => t.task.round!,
      progress: () => ({ received: this.open?.accepted.length ?? 0, selected: this.open?.tasks.size ?? 0 }),
      // Every task of a round trains the same model: the round's.
      wrongBaseModel: (t, meta) => precondition(`stale base model ${echo(meta.base_model_sha256)}; round ${t.task.round} trains ${t.task.base_model_sha256}`),
      endedWhileUploading: (meta) => precondition(`round ${meta.round} closed while the update was uploading`),
      ended: (_t, end) => {
        if (end.state === 'accepted') this.open?.accepted.push(end.update);
        if (end.state === 'rejected') this.open?.rejected.push(end.row);
      },
      wake: () => this.open?.wake(),
    });
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
    const { experiment, sessions } = this.o;
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
      const issue = { round, attempt, baseModelSha256: this.global.sha256, training, issuedAt: startedAt, deadline };
      this.desk.issue(session, issue, (t) => open.tasks.set(t.task.task_id!, t));
    }
    this.o.onEvent?.({ type: 'round-started', round, attempt, selected: selected.length, deadline });

    // Wait until the target number of updates is in, every task is answered, or the deadline passes.
    const target = experiment.selection.nodes_per_round;
    const leaseCheck = setInterval(() => this.desk.dropDeadNodes(), 1000);
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

  private pending(open: OpenRound): number {
    let n = 0;
    for (const t of open.tasks.values()) if (t.state === 'assigned' || t.state === 'receiving') n++;
    return n;
  }

  /** Whether the task's round is still open (its outcome is not final). */
  taskPending(taskId: string): boolean {
    return this.open?.tasks.has(taskId) ?? false;
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
          updateRow(runId, open.round, u, { verdict: 'abandoned', weight: 0, reason: `round abandoned: ${reason}` }),
        ),
        ...open.rejected,
      ],
    });
    this.o.onEvent?.({ type: 'round-abandoned', round: open.round, attempt: open.attempt, reason });
    return undefined;
  }
}

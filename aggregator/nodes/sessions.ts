// Who is connected right now. A session lives while its node keeps calling
// (polls, heartbeats, uploads); one silent for longer than the lease is gone,
// and whatever task it held stops holding its round up.
import { randomUUID } from 'node:crypto';
import type { NodeCapabilities__Output } from '../../proto/generated/crowdfl/v1/NodeCapabilities.js';
import type { PollTaskReply } from '../../proto/generated/crowdfl/v1/PollTaskReply.js';
import type { Task } from '../../proto/generated/crowdfl/v1/Task.js';
import { echo, notFound } from '../rpc-error.js';

export interface Session {
  readonly id: string;
  readonly nodeId: string;
  readonly publicKey: Uint8Array;
  readonly capabilities: NodeCapabilities__Output;
  lastSeen: number;
  /** When the registry's last_seen was last written for this session (Hello writes it too). */
  lastPersisted: number;
  /** A long poll waiting for work. */
  waiting?: { resolve: (reply: PollTaskReply) => void; timer: NodeJS.Timeout };
  /** A task handed out but not yet fetched by a poll. */
  queued?: Task;
  /** The task the node is working on, until it submits or its round closes. */
  busyWith?: string;
  /**
   * Why this session is never offered a task: the experiment's tasks exceed a
   * cap its node declared, or it declined one as over a cap. A node whose
   * operator changes its caps says hello again, which starts a fresh session.
   */
  unfit?: string;
}

export class Sessions {
  private readonly byId = new Map<string, Session>();
  private finished = false;
  /** Nodes that have been told the experiment is over. */
  private readonly heardFinished = new Set<string>();
  /** Sessions closed (replaced by a new hello, goodbye, ban) since the engine last asked. */
  private closedSinceExpire: Session[] = [];

  constructor(
    readonly leaseMs: number,
    private readonly retryAfterMs: () => number,
  ) {}

  /** Pace steering: when an idle node should poll again. */
  retryAfter(): number {
    return this.retryAfterMs();
  }

  open(nodeId: string, publicKey: Uint8Array, capabilities: NodeCapabilities__Output): Session {
    // A node that restarts says hello again: its old session is dead.
    for (const s of this.byId.values()) if (s.nodeId === nodeId) this.close(s.id);
    const now = Date.now();
    const session: Session = { id: randomUUID(), nodeId, publicKey, capabilities, lastSeen: now, lastPersisted: now };
    this.byId.set(session.id, session);
    return session;
  }

  get(sessionId: string): Session {
    const s = this.byId.get(sessionId);
    if (!s) throw notFound(`unknown or expired session ${echo(sessionId)}; call Hello again`);
    s.lastSeen = Date.now();
    return s;
  }

  close(sessionId: string): void {
    const s = this.byId.get(sessionId);
    if (!s) return;
    if (s.waiting) {
      clearTimeout(s.waiting.timer);
      s.waiting.resolve({ retry_after_ms: this.retryAfterMs() });
    }
    this.byId.delete(sessionId);
    this.closedSinceExpire.push(s);
  }

  /** Alive and not working on anything: can be selected. */
  idle(): Session[] {
    return [...this.byId.values()].filter((s) => !s.busyWith && !s.queued);
  }

  all(): Session[] {
    return [...this.byId.values()];
  }

  /**
   * Removes sessions silent for longer than the lease; returns them, with
   * those closed otherwise since the last call (a node said hello again or
   * goodbye, or was banned), whose tasks no longer hold a round up either.
   */
  expire(now = Date.now()): Session[] {
    const dead = [...this.byId.values()].filter((s) => !s.waiting && now - s.lastSeen > this.leaseMs);
    for (const s of dead) this.close(s.id);
    const gone = this.closedSinceExpire;
    this.closedSinceExpire = [];
    return gone;
  }

  /** Long poll: resolves with a task as soon as one is assigned, or empty after `waitMs`. */
  poll(session: Session, waitMs: number): Promise<PollTaskReply> {
    if (this.finished) {
      this.heardFinished.add(session.nodeId);
      return Promise.resolve({ experiment_finished: true, retry_after_ms: 0 });
    }
    // It will get no task this session; telling it now beats holding its poll open.
    if (session.unfit) return Promise.resolve({ retry_after_ms: this.retryAfterMs(), idle_reason: session.unfit });
    if (session.queued) {
      const task = session.queued;
      session.queued = undefined;
      return Promise.resolve({ task });
    }
    if (session.waiting) {
      // A second poll from the same session replaces the first (the first's caller is gone).
      clearTimeout(session.waiting.timer);
      session.waiting.resolve({ retry_after_ms: 0 });
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        session.waiting = undefined;
        session.lastSeen = Date.now();
        resolve({ retry_after_ms: this.retryAfterMs(), idle_reason: session.unfit ?? '' });
      }, waitMs);
      session.waiting = { resolve, timer };
    });
  }

  /** The node hung up on its long poll (it died or restarted): it is no longer waiting. */
  cancelPoll(session: Session): void {
    if (!session.waiting) return;
    clearTimeout(session.waiting.timer);
    session.waiting = undefined;
  }

  assign(session: Session, task: Task): void {
    session.busyWith = task.task_id ?? undefined;
    if (session.waiting) {
      const { resolve, timer } = session.waiting;
      clearTimeout(timer);
      session.waiting = undefined;
      resolve({ task });
    } else {
      session.queued = task;
    }
  }

  /** The task is over for this node (submitted, or its round closed). */
  release(taskId: string): void {
    for (const s of this.byId.values()) {
      if (s.busyWith === taskId) s.busyWith = undefined;
      if (s.queued?.task_id === taskId) s.queued = undefined;
    }
  }

  finish(): void {
    this.finished = true;
    for (const s of this.byId.values()) {
      if (s.waiting) {
        clearTimeout(s.waiting.timer);
        s.waiting.resolve({ experiment_finished: true, retry_after_ms: 0 });
        s.waiting = undefined;
        this.heardFinished.add(s.nodeId);
      }
    }
  }

  /** Whether every one of these nodes has been told the experiment is over. */
  allHeardFinished(nodeIds: Iterable<string>): boolean {
    for (const id of nodeIds) if (!this.heardFinished.has(id)) return false;
    return true;
  }

  get isFinished(): boolean {
    return this.finished;
  }
}

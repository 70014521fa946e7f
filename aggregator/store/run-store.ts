// The queries the aggregator makes. A round's outcome (its row, every
// update's verdict, the nodes' counters) is written in ONE transaction, so a
// crash leaves either the whole round or none of it.
import { and, asc, eq, getTableColumns, sql } from 'drizzle-orm';
import { byTaskId } from '../../core/signing/layouts.js';
import type { ReputationChange } from '../nodes/reputation.js';
import type { Db } from './db.js';
import { inModel, invitations, nodes, refusals, rounds, runs, tasks, updates, type NodeRow, type RoundRow, type RunRow, type UpdateRow } from './schema.js';

export interface RoundOutcome {
  round: typeof rounds.$inferInsert;
  updates: UpdateRow[];
  /** New reputations (and automatic bans) from this round's verdicts. */
  reputations?: readonly ReputationChange[];
}

/** Refusal rows kept per source (node id, or peer address without a session). */
export const MAX_REFUSALS_PER_SOURCE = 100;

export class RunStore {
  /** Refusal rows per source, read from the database on a source's first refusal in this process. */
  private readonly refusalCounts = new Map<string, number>();

  constructor(private readonly db: Db) {}

  createRun(row: typeof runs.$inferInsert): void {
    this.db.insert(runs).values(row).run();
  }

  finishRun(id: string, status: 'finished' | 'failed'): void {
    this.db.update(runs).set({ status, finishedAt: Date.now() }).where(eq(runs.id, id)).run();
  }

  /** A restarted aggregator takes its run back. */
  resumeRun(id: string): void {
    this.db.update(runs).set({ status: 'running', finishedAt: null }).where(eq(runs.id, id)).run();
  }

  /** The attempt number the next try of `round` gets: attempts already recorded (abandoned ones too) are never reused. */
  nextAttempt(runId: string, round: number): number {
    const row = this.db
      .select({ last: sql<number | null>`max(${rounds.attempt})` })
      .from(rounds)
      .where(and(eq(rounds.runId, runId), eq(rounds.round, round)))
      .get();
    return row?.last === null || row?.last === undefined ? 0 : row.last + 1;
  }

  getRun(id: string): RunRow | undefined {
    return this.db.select().from(runs).where(eq(runs.id, id)).get();
  }

  runRows(): RunRow[] {
    return this.db.select().from(runs).orderBy(asc(runs.startedAt)).all();
  }

  touchNode(nodeId: string, publicKey: string, capabilities: string, software: string): void {
    const now = Date.now();
    this.db
      .insert(nodes)
      .values({ nodeId, publicKey, firstSeen: now, lastSeen: now, capabilities, software })
      .onConflictDoUpdate({ target: nodes.nodeId, set: { lastSeen: now, capabilities, software } })
      .run();
  }

  /**
   * Keeps a refused call. Returns false, writing nothing, once its source (a node id, or a peer address
   * for calls without a session) has MAX_REFUSALS_PER_SOURCE rows: a flood cannot fill the disk.
   */
  recordRefusal(nodeId: string, publicKey: string, reason: string, call: { kind?: 'hello' | 'upload'; taskId?: string; round?: number } = {}): boolean {
    let count = this.refusalCounts.get(nodeId);
    if (count === undefined) {
      count = this.db.select({ n: sql<number>`count(*)` }).from(refusals).where(eq(refusals.nodeId, nodeId)).get()?.n ?? 0;
    }
    if (count >= MAX_REFUSALS_PER_SOURCE) return false;
    this.refusalCounts.set(nodeId, count + 1);
    this.db
      .insert(refusals)
      .values({
        at: Date.now(),
        nodeId: nodeId.slice(0, 200),
        publicKey: publicKey.slice(0, 100),
        reason: reason.slice(0, 1000),
        kind: call.kind ?? 'hello',
        // The caller's, at any length: what is kept of it is bounded like the reason.
        taskId: (call.taskId ?? '').slice(0, 200),
        round: call.round ?? null,
      })
      .run();
    return true;
  }

  /** Refusal rows in the database, from every source. */
  refusalCount(): number {
    return this.db.select({ n: sql<number>`count(*)` }).from(refusals).get()?.n ?? 0;
  }

  refusalRows(): (typeof refusals.$inferSelect)[] {
    return this.db.select().from(refusals).orderBy(asc(refusals.id)).all();
  }

  node(nodeId: string): NodeRow | undefined {
    return this.db.select().from(nodes).where(eq(nodes.nodeId, nodeId)).get();
  }

  /** Bans a node by its id (derived from its key); it may not have joined yet. */
  banNode(nodeId: string, publicKey: string, reason: string): void {
    const now = Date.now();
    this.db
      .insert(nodes)
      .values({ nodeId, publicKey, status: 'banned', statusReason: reason, firstSeen: now, lastSeen: now, capabilities: '{}' })
      .onConflictDoUpdate({ target: nodes.nodeId, set: { status: 'banned', statusReason: reason } })
      .run();
  }

  /** Counts one use of an invitation; false when it is used up. Atomic, so two nodes cannot share the last use. */
  useInvitation(tokenId: string, maxUses: number, expiresAt: number): boolean {
    return this.db.transaction((tx) => {
      tx.insert(invitations).values({ tokenId, maxUses, expiresAt }).onConflictDoNothing().run();
      const row = tx.select().from(invitations).where(eq(invitations.tokenId, tokenId)).get()!;
      if (row.uses >= row.maxUses) return false;
      tx.update(invitations).set({ uses: row.uses + 1 }).where(eq(invitations.tokenId, tokenId)).run();
      return true;
    });
  }

  seeNode(nodeId: string): void {
    this.db.update(nodes).set({ lastSeen: Date.now() }).where(eq(nodes.nodeId, nodeId)).run();
  }

  recordTask(row: typeof tasks.$inferInsert): void {
    this.db.insert(tasks).values(row).run();
  }

  recordDecline(taskId: string, nodeId: string, reason: string, kind: string): void {
    this.db.transaction((tx) => {
      tx.update(tasks).set({ declinedAt: Date.now(), declineReason: reason, declineKind: kind }).where(eq(tasks.taskId, taskId)).run();
      tx.update(nodes).set({ declined: sql`${nodes.declined} + 1` }).where(eq(nodes.nodeId, nodeId)).run();
    });
  }

  task(taskId: string): (typeof tasks.$inferSelect) | undefined {
    return this.db.select().from(tasks).where(eq(tasks.taskId, taskId)).get();
  }

  commitRound(outcome: RoundOutcome): void {
    this.db.transaction((tx) => {
      tx.insert(rounds).values(outcome.round).run();
      for (const u of outcome.updates) {
        tx.insert(updates).values(u).run();
        // An abandoned round's updates count neither as accepted nor as rejected.
        if (u.verdict === 'abandoned') continue;
        tx.update(nodes)
          .set(inModel(u.verdict) ? { accepted: sql`${nodes.accepted} + 1` } : { rejected: sql`${nodes.rejected} + 1` })
          .where(eq(nodes.nodeId, u.nodeId))
          .run();
      }
      for (const r of outcome.reputations ?? []) {
        tx.update(nodes)
          .set({
            reputation: r.reputation,
            verdicts: r.verdicts,
            ...(r.ban ? { status: 'banned' as const, statusReason: `automatic: ${r.ban}` } : {}),
          })
          .where(eq(nodes.nodeId, r.nodeId))
          .run();
      }
    });
  }

  committedRounds(runId: string): RoundRow[] {
    return this.db
      .select()
      .from(rounds)
      .where(and(eq(rounds.runId, runId), eq(rounds.status, 'committed')))
      .orderBy(asc(rounds.round))
      .all();
  }

  /** Every attempt of every round, abandoned ones included, in the order they were tried. */
  roundAttempts(runId: string): RoundRow[] {
    return this.db.select().from(rounds).where(eq(rounds.runId, runId)).orderBy(asc(rounds.round), asc(rounds.attempt)).all();
  }

  /** The updates of one attempt of a round: those answering the tasks that attempt issued. */
  updatesOfAttempt(attempt: Pick<RoundRow, 'runId' | 'round' | 'attempt'>): (typeof updates.$inferSelect)[] {
    return this.db
      .select(getTableColumns(updates))
      .from(updates)
      .innerJoin(tasks, eq(tasks.taskId, updates.taskId))
      .where(and(eq(updates.runId, attempt.runId), eq(updates.round, attempt.round), eq(tasks.attempt, attempt.attempt)))
      .orderBy(asc(updates.id))
      .all();
  }

  updatesOfRound(runId: string, round: number): (typeof updates.$inferSelect)[] {
    return this.db
      .select()
      .from(updates)
      .where(and(eq(updates.runId, runId), eq(updates.round, round)))
      .orderBy(asc(updates.id))
      .all();
  }

  updateOfTask(taskId: string): (typeof updates.$inferSelect) | undefined {
    return this.db.select().from(updates).where(eq(updates.taskId, taskId)).get();
  }

  committedRound(runId: string, round: number): RoundRow | undefined {
    return this.db
      .select()
      .from(rounds)
      .where(and(eq(rounds.runId, runId), eq(rounds.round, round), eq(rounds.status, 'committed')))
      .get();
  }

  /**
   * The accepted list of a round's signed record ("crowdfl/round/v1"): the
   * updates its model was built from (kept or down-weighted), by task id.
   */
  creditedUpdates(runId: string, round: number): { task_id: string; update_digest_hex: string; signature_b64: string }[] {
    return this.updatesOfRound(runId, round)
      .filter((u) => inModel(u.verdict))
      .map((u) => ({ task_id: u.taskId, update_digest_hex: u.updateDigest, signature_b64: u.signature }))
      .sort(byTaskId);
  }

  /** Every task issued to one node in a run, oldest first. */
  tasksOfNode(runId: string, nodeId: string): (typeof tasks.$inferSelect)[] {
    return this.db
      .select()
      .from(tasks)
      .where(and(eq(tasks.runId, runId), eq(tasks.nodeId, nodeId)))
      .orderBy(asc(tasks.issuedAt))
      .all();
  }

  /** Every update received from one node in a run (refused uploads included), oldest first. */
  updatesOfNode(runId: string, nodeId: string): (typeof updates.$inferSelect)[] {
    return this.db
      .select()
      .from(updates)
      .where(and(eq(updates.runId, runId), eq(updates.nodeId, nodeId)))
      .orderBy(asc(updates.id))
      .all();
  }

  nodeRows(): (typeof nodes.$inferSelect)[] {
    return this.db.select().from(nodes).orderBy(asc(nodes.nodeId)).all();
  }
}

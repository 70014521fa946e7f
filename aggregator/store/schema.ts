// The one schema of the aggregator's stored state. Migrations in ./migrations
// are generated from it by `npm run db:generate`; never edit them by hand.
import { sql } from 'drizzle-orm';
import { index, integer, primaryKey, real, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';

export const runs = sqliteTable('runs', {
  id: text('id').primaryKey(),
  experimentName: text('experiment_name').notNull(),
  experimentJson: text('experiment_json').notNull(),
  seed: integer('seed').notNull(),
  backend: text('backend').notNull(),
  aggregatorPublicKey: text('aggregator_public_key').notNull(),
  software: text('software').notNull(),
  status: text('status', { enum: ['running', 'finished', 'failed'] }).notNull(),
  // The aggregator's signature over the "crowdfl/run/v1" digest: experiment JSON hash, seed, initial model.
  initialModelSha256: text('initial_model_sha256').notNull().default(''),
  runSignature: text('run_signature').notNull().default(''),
  startedAt: integer('started_at').notNull(),
  finishedAt: integer('finished_at'),
});

export const nodes = sqliteTable('nodes', {
  nodeId: text('node_id').primaryKey(),
  publicKey: text('public_key').notNull(),
  status: text('status', { enum: ['active', 'banned'] }).notNull().default('active'),
  statusReason: text('status_reason').notNull().default(''),
  firstSeen: integer('first_seen').notNull(),
  lastSeen: integer('last_seen').notNull(),
  capabilities: text('capabilities').notNull(),
  software: text('software').notNull().default(''),
  accepted: integer('accepted').notNull().default(0),
  rejected: integer('rejected').notNull().default(0),
  // Moving average of the aggregator's verdicts on this node's updates (1 = always kept).
  reputation: real('reputation').notNull().default(1),
  verdicts: integer('verdicts').notNull().default(0),
  declined: integer('declined').notNull().default(0),
});

export const rounds = sqliteTable(
  'rounds',
  {
    runId: text('run_id').notNull().references(() => runs.id),
    round: integer('round').notNull(),
    // A round abandoned for lack of quorum is retried under the same number.
    attempt: integer('attempt').notNull(),
    status: text('status', { enum: ['committed', 'abandoned'] }).notNull(),
    reason: text('reason').notNull().default(''),
    selected: integer('selected').notNull(),
    participants: integer('participants').notNull(),
    examples: integer('examples').notNull(),
    accuracy: real('accuracy'),
    loss: real('loss'),
    modelSha256: text('model_sha256').notNull(),
    previousModelSha256: text('previous_model_sha256').notNull().default(''),
    // The aggregator's signature over the "crowdfl/round/v1" digest: the new
    // model hash and every accepted update's digest and signature.
    roundDigest: text('round_digest').notNull().default(''),
    aggregatorSignature: text('aggregator_signature').notNull().default(''),
    startedAt: integer('started_at').notNull(),
    closedAt: integer('closed_at').notNull(),
    seconds: real('seconds').notNull(),
    // Everything but the nodes' local training: transfers, decode, aggregate, evaluate, persist.
    overheadSeconds: real('overhead_seconds').notNull(),
  },
  (t) => [primaryKey({ columns: [t.runId, t.round, t.attempt] })],
);

export const tasks = sqliteTable('tasks', {
  taskId: text('task_id').primaryKey(),
  runId: text('run_id').notNull().references(() => runs.id),
  round: integer('round').notNull(),
  // Which attempt of the round issued the task (0 in databases from before attempts were recorded here).
  attempt: integer('attempt').notNull().default(0),
  nodeId: text('node_id').notNull(),
  issuedAt: integer('issued_at').notNull(),
  deadline: integer('deadline').notNull(),
  // Set when the node said it would not answer the task, and why.
  declinedAt: integer('declined_at'),
  declineReason: text('decline_reason'),
  // The DeclineKind the node gave (proto/crowdfl.proto), e.g. OVER_CAP or PAUSED.
  declineKind: text('decline_kind'),
});

export const updates = sqliteTable(
  'updates',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    runId: text('run_id').notNull().references(() => runs.id),
    round: integer('round').notNull(),
    taskId: text('task_id').notNull(),
    nodeId: text('node_id').notNull(),
    numExamples: integer('num_examples').notNull(),
    baseModelSha256: text('base_model_sha256').notNull(),
    updateSha256: text('update_sha256').notNull(),
    updateDigest: text('update_digest').notNull().default(''),
    signature: text('signature').notNull().default(''),
    metrics: text('metrics').notNull(),
    // 'abandoned': the update was fine but its round attempt was abandoned (no quorum, the rule refused the
    // round); it went into no model and counts neither for nor against its node.
    // 'not-selected': the rule left it out without evidence against it (its capacity: Multi-Krum's m).
    verdict: text('verdict', { enum: ['kept', 'down-weighted', 'not-selected', 'rejected', 'abandoned'] }).notNull(),
    weight: real('weight').notNull(),
    // The rule's score behind the verdict (e.g. Krum score, share of coordinates trimmed); null when it has none.
    score: real('score'),
    reason: text('reason').notNull().default(''),
    // Evidence against the update (robust/verdict.ts): set on every rejected one, and on updates the rule
    // used but flagged (far from the aggregate, a copy of another's). Only this moves reputation.
    evidence: text('evidence'),
    // The reputation the aggregation weighed this update with; null when the update never reached
    // the aggregation (refused by the protocol checks, or its attempt was abandoned).
    inputReputation: real('input_reputation'),
    // FedBuff: how many models were published between the update's base model and the one it was
    // folded into (its discount depends on it); null for synchronous strategies and non-inputs.
    staleness: integer('staleness'),
    receivedAt: integer('received_at').notNull(),
    createdAt: integer('created_at').notNull().default(sql`(unixepoch() * 1000)`),
  },
  (t) => [uniqueIndex('updates_task_unique').on(t.taskId)],
);

export type RunRow = typeof runs.$inferSelect;
export type RoundRow = typeof rounds.$inferSelect;
export type UpdateRow = typeof updates.$inferInsert;

export const invitations = sqliteTable('invitations', {
  tokenId: text('token_id').primaryKey(),
  maxUses: integer('max_uses').notNull(),
  uses: integer('uses').notNull().default(0),
  expiresAt: integer('expires_at').notNull(),
});

export type NodeRow = typeof nodes.$inferSelect;

/** Hellos refused (bad proof, banned, not admitted): who tried, when, and why. */
// Calls refused before anything reached a round: hellos turned away, and uploads refused before they
// could be a round's rejected update (unknown or foreign task, wrong round, stale base, a broken or cut
// off stream, an unknown session). At most MAX_REFUSALS_PER_SOURCE rows per node (or, without a
// session, per peer address), so a flood cannot fill the disk (run-store.ts).
export const refusals = sqliteTable(
  'refusals',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    at: integer('at').notNull(),
    nodeId: text('node_id').notNull(),
    publicKey: text('public_key').notNull(),
    reason: text('reason').notNull(),
    kind: text('kind', { enum: ['hello', 'upload'] }).notNull().default('hello'),
    taskId: text('task_id').notNull().default(''),
    round: integer('round'),
  },
  (t) => [index('refusals_node').on(t.nodeId)],
);

/** Whether an update row's verdict put it into its round's model: kept or down-weighted (not rejected, not abandoned). */
export function inModel(verdict: string): boolean {
  return verdict === 'kept' || verdict === 'down-weighted';
}

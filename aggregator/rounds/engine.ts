// What a round engine is, whichever way it schedules work: the interface the
// gRPC handlers (server.ts) call, what it is given (EngineOptions), what it
// reports (EngineEvent, RoundRecord), and the small scheduling helpers the synchronous engine
// (synchronous.ts) and the buffered one (buffered.ts) share.
// The task and upload lifecycle, and the part of an engine a node's calls reach (DeskEngine),
// live in uploads.ts, the models served for
// download in served-models.ts, the commit of an aggregation in commit.ts.
import type { Experiment } from '../experiment/schema.js';
import type { Identity } from '../../core/signing/keys.js';
import type { TensorEntry } from '../../core/tensor-codec.js';
import type { TensorSpec } from '../../proto/generated/crowdfl/v1/TensorSpec.js';
import type { UpdateMeta__Output } from '../../proto/generated/crowdfl/v1/UpdateMeta.js';
import type { UpdateSeal__Output } from '../../proto/generated/crowdfl/v1/UpdateSeal.js';
import { selectable } from '../nodes/reputation.js';
import type { Session, Sessions } from '../nodes/sessions.js';
import type { RunStore } from '../store/run-store.js';
import type { UpdateBlobs } from '../store/update-blobs.js';
import type { ServerOptimizerState } from '../strategies/server-optimizers.js';
import type { Strategy } from '../strategies/strategy.js';

export interface RoundRecord {
  round: number;
  accuracy: number;
  loss: number;
  participants: number;
  selected: number;
  /** Updates rejected on evidence, and uploads refused. */
  rejected: number;
  /** Updates the rule left out without evidence against them (its capacity). */
  not_selected: number;
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
  /** Where each committed round's signed record is written (records/, see store/signed-records.ts). */
  recordsDir: string;
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

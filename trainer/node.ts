// The node loop: say hello, wait for a task, fetch the base model, train on
// local data, submit the delta, repeat. Any network failure sends the node
// back to hello after an exponential, jittered backoff, so a restarted
// aggregator finds its nodes again without anyone touching them.
import { cpus, totalmem } from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { ensureBackendFor, initBackend } from '../core/backend.js';
import type { BackendPreference } from '../core/backend.js';
import { activationsPerExample, numParams, weightManifest, type ModelSpec } from '../core/model/spec.js';
import { parseModelJson } from '../core/model/zoo.js';
import type { Dataset } from '../core/dataset.js';
import type { Task__Output } from '../proto/generated/crowdfl/v1/Task.js';
import { AggregatorConnection, isTransient, retryAfterMs } from './client.js';
import { fingerprint, nodeIdFromPublicKey, type Identity } from '../core/signing/keys.js';
import { taskProblem, tooSlowForDeadline } from './task-check.js';
import { channelCredentials, type ClientTlsFiles } from '../core/tls.js';
import { TransportMismatch, transportMismatch } from './transport-mismatch.js';
import { trainingThreads, trainLocally } from './training/local-training.js';
import { SOFTWARE } from '../core/version.js';
import type { DeclineKind__Output as DeclineKind } from '../proto/generated/crowdfl/v1/DeclineKind.js';
import type { Availability, Blocked } from './availability.js';
import { outcomeEntry, type Ledger } from './ledger.js';
import type { Caps } from './node-config.js';
import { limitsForHello, overCap, overMemoryCap } from './operator-caps.js';
import { UserError } from '../core/user-error.js';
import { divergedTraining } from './update-checks.js';

/**
 * Attack experiments only: replaces the node's honest update just before it is
 * signed and uploaded (see attacks/byzantine-node.ts). Operators never set it.
 */
export type UpdateAdversary = (honest: { round: number; delta: Float32Array; deadline: number }) => Promise<Float32Array>;

export interface NodeOptions {
  aggregator: string;
  identity: Identity;
  /** The aggregator key to trust; without one the first key seen is pinned (trust on first use). */
  aggregatorKey?: Uint8Array;
  /** Called when a key is pinned on first use, so it can be remembered across restarts. */
  onPinned?: (key: Uint8Array) => void;
  invitation?: string;
  /** CA (and, for mutual TLS, this node's certificate) to reach a TLS aggregator; plaintext without. */
  tls?: ClientTlsFiles;
  data: Dataset;
  backend: BackendPreference;
  /** Exit once the aggregator says the experiment is over (simulations); operators keep polling. */
  exitWhenFinished?: boolean;
  log?: (msg: string) => void;
  signal?: AbortSignal;
  adversary?: UpdateAdversary;
  /**
   * Attack simulations only (attacks/byzantine-node-main.ts): the example count this node declares at
   * hello and claims in every update instead of its real one. Operators never set it.
   */
  claimedExamples?: number;
  /**
   * Fault injection for experiments only: when it says so for a task, the node
   * goes silent mid-round (no heartbeat, no upload, connection closed) and
   * comes back after the task's deadline, like a machine that went to sleep.
   */
  vanishes?: (task: { round: number; taskId: string }) => boolean;
  /**
   * Fault injection for experiments only: a straggler. The node takes this many
   * times as long per task as its training did, by waiting out the difference
   * before it uploads (still heartbeating, so the aggregator sees it working).
   */
  slowdown?: number;
  /** Decline a task whose deadline leaves time for less than this share of one local epoch (default 0.25). */
  minEpochFraction?: number;
  /**
   * Called with each global model this node downloads (the base of a task of round r is the model
   * round r − 1 committed), e.g. to serve it locally (`crowdfl node --serve`).
   */
  onGlobalModel?: (model: { round: number; spec: ModelSpec; weights: Float32Array; sha256: string }) => void;
  /** The operator's caps; a task over one is declined (and the aggregator told which it can check, at hello). */
  caps?: Caps;
  /** Pause, hours and idle rules: the node polls only while they allow, and stops a task when they no longer do. */
  availability?: Availability;
  /** The contribution ledger: every task's fate, and the aggregator's signed word on each update. */
  ledger?: Ledger;
}

/** Time the upload needs after training: local work stops this long before the deadline. */
const UPLOAD_MARGIN_MS = 3000;

/** Thrown inside the loop when fault injection makes the node vanish until `until`. */
class Vanished extends Error {
  constructor(readonly until: number) {
    super('vanished (fault injection)');
  }
}

/** Thrown inside the loop when the operator's rules stop the node from working for now. */
class Unavailable extends Error {
  constructor(readonly blocked: Blocked) {
    super(blocked.reason);
  }
}

/** The aggregator said no in a way retrying cannot fix (banned, not invited, wrong version). */
export class AggregatorRefusal extends UserError {}

export class Backoff {
  private attempt = 0;
  constructor(
    private readonly baseMs = 500,
    private readonly maxMs = 30_000,
  ) {}
  /** Full jitter (random in [0, base·2ⁿ]), so restarting nodes do not reconnect in lockstep. */
  next(): number {
    const ceiling = Math.min(this.maxMs, this.baseMs * 2 ** this.attempt++);
    return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  }
  reset(): void {
    this.attempt = 0;
  }
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });

export async function runNode(o: NodeOptions): Promise<{ tasksDone: number }> {
  const log = o.log ?? (() => {});
  const backendName = await initBackend(o.backend, { log });
  const caps = o.caps ?? {};
  const capabilities = {
    backends: [backendName],
    cores: Math.min(cpus().length, caps.cores ?? Infinity),
    memory_bytes: totalmem(),
    num_examples: o.claimedExamples ?? o.data.numExamples,
    feature_shape: [...o.data.featureShape],
    num_classes: o.data.numClasses,
    limits: limitsForHello(caps),
  };
  const nodeId = nodeIdFromPublicKey(o.identity.publicKey);
  let pinned = o.aggregatorKey;
  const backoff = new Backoff();
  const modelCache = new Map<string, Float32Array>();
  const speed: NodeSpeed = {};
  let tasksDone = 0;
  let lastIdleReason = '';
  while (!o.signal?.aborted) {
    const blocked = o.availability?.blocked();
    if (blocked) {
      log(`not taking work: ${blocked.reason}`);
      await o.availability!.whenAvailable(o.signal);
      if (!o.signal?.aborted) log('taking work again');
      continue;
    }
    const conn = new AggregatorConnection(o.aggregator, channelCredentials(o.tls));
    try {
      const hello = await conn.hello(o.identity, nodeId, capabilities, SOFTWARE, pinned, o.invitation);
      if (!pinned) {
        pinned = new Uint8Array(hello.aggregator_public_key);
        log(`pinned aggregator key ${fingerprint(pinned)} on first use; pass --aggregator-key to pin it explicitly`);
        o.onPinned?.(pinned);
      }
      log(`joined experiment ${hello.experiment_id} at ${o.aggregator} as ${nodeId} (aggregator ${fingerprint(pinned)})`);
      backoff.reset();
      const settle = () => (o.ledger ? settleOutcomes(conn, o.ledger, hello.experiment_id, pinned!, log) : Promise.resolve());
      await settle();
      for (;;) {
        if (o.signal?.aborted) {
          await conn.goodbye('the node is shutting down').catch(() => undefined);
          return { tasksDone };
        }
        const unavailable = o.availability?.blocked();
        if (unavailable) throw new Unavailable(unavailable);
        const reply = await conn.pollTask(20_000, o.signal);
        if (reply.experiment_finished) {
          log('the aggregator finished its experiment');
          await settle();
          if (o.exitWhenFinished) return { tasksDone };
          await sleep(5000, o.signal);
          continue;
        }
        // A new task (or an idle poll) usually means the round of the last update has closed: ask what became of it.
        await settle();
        if (!reply.task) {
          if (reply.idle_reason !== lastIdleReason && reply.idle_reason) log(`the aggregator gives this node no work: ${reply.idle_reason}`);
          lastIdleReason = reply.idle_reason;
          await sleep(reply.retry_after_ms, o.signal);
          continue;
        }
        await work(conn, reply.task, hello.heartbeat_interval_ms, modelCache, speed, { ...o, nodeId, aggregatorKey: pinned }, log);
        tasksDone++;
      }
    } catch (err) {
      if (err instanceof Unavailable) {
        // Leaving explicitly keeps the aggregator from selecting a node that is not there; it says hello again when it may work.
        await conn.goodbye(err.blocked.reason).catch(() => undefined);
        conn.close();
        continue;
      }
      if (err instanceof Vanished) {
        conn.close();
        await sleep(Math.max(0, err.until - Date.now()), o.signal);
        continue;
      }
      if (!isTransient(err)) {
        const details = (err as { details?: string }).details;
        throw details ? new AggregatorRefusal(`the aggregator at ${o.aggregator} refused this node: ${details}`) : err;
      }
      const mismatch = await transportMismatch(err, o.aggregator, o.tls);
      if (mismatch) throw new TransportMismatch(mismatch);
      // A busy aggregator says when to come back (pace steering); otherwise the node's own backoff decides.
      const asked = retryAfterMs(err);
      const wait = asked ?? backoff.next();
      log(`aggregator ${asked !== undefined ? 'busy' : 'unreachable'} (${(err as Error).message}); retrying in ${(wait / 1000).toFixed(1)} s`);
      await sleep(wait, o.signal);
    } finally {
      conn.close();
    }
  }
  return { tasksDone };
}

/** What this node learnt about its own speed from the tasks it trained. */
interface NodeSpeed {
  examplesPerSecond?: number;
}

async function work(
  conn: AggregatorConnection,
  task: Task__Output,
  heartbeatMs: number,
  modelCache: Map<string, Float32Array>,
  speed: NodeSpeed,
  o: NodeOptions & { nodeId: string; aggregatorKey: Uint8Array },
  log: (msg: string) => void,
): Promise<void> {
  const started = Date.now();
  const caps = o.caps ?? {};
  const entry = { at: started, aggregator: fingerprint(o.aggregatorKey), experiment: task.experiment_id, round: task.round, task: task.task_id };
  // Telling the aggregator frees this node's slot now instead of at the deadline.
  const decline = async (reason: string, kind: DeclineKind) => {
    log(`round ${task.round}: declined task ${task.task_id}: ${reason}`);
    o.ledger?.append({ ...entry, event: 'declined', at: Date.now(), kind, reason });
    try {
      await conn.declineTask(task.task_id, reason, kind);
    } catch (err) {
      log(`round ${task.round}: the aggregator did not take the decline: ${(err as Error).message}`);
    }
  };
  const problem = taskProblem(task, o.nodeId, o.aggregatorKey);
  if (problem) {
    await decline(`refused the task: ${problem}`, 'REFUSED');
    return;
  }
  let spec: ModelSpec;
  try {
    spec = parseModelJson(task.model_json);
  } catch (err) {
    await decline(`refused the model: ${(err as Error).message}`, 'REFUSED');
    return;
  }
  const blocked = o.availability?.blocked();
  if (blocked) {
    await decline(blocked.reason, blocked.kind);
    return;
  }
  const training = task.training!;
  const size = {
    parameters: numParams(spec),
    epochs: training.epochs,
    batchSize: training.batch_size,
    localExamples: o.data.numExamples,
    activationsPerExample: activationsPerExample(spec),
  };
  const now = { rssBytes: process.memoryUsage.rss(), examplesPerSecond: speed.examplesPerSecond };
  // The operator's core cap is the most threads training may keep busy (all cores without one);
  // when the replicas would not fit the memory cap, one thread may.
  let threads = trainingThreads({ threads: Math.min(cpus().length, caps.cores ?? Infinity), spec, batchSize: training.batch_size, data: o.data });
  if (threads > 1 && overCap(caps, { ...size, threads }, now) !== undefined) threads = 1;
  const over = overCap(caps, size, now);
  if (over) {
    await decline(over, 'OVER_CAP');
    return;
  }
  // Leave time for the upload: stop local work a little before the deadline, and never past the operator's time cap.
  const trainUntil = Math.min(
    Number(task.deadline_unix_ms) - UPLOAD_MARGIN_MS,
    caps.max_task_seconds !== undefined ? started + caps.max_task_seconds * 1000 : Infinity,
  );
  const tooSlow = tooSlowForDeadline({
    trainUntil,
    now: Date.now(),
    examplesPerSecond: speed.examplesPerSecond,
    localExamples: o.data.numExamples,
    minEpochFraction: o.minEpochFraction ?? 0.25,
  });
  if (tooSlow) {
    await decline(tooSlow, 'TOO_SLOW');
    return;
  }
  const manifest = weightManifest(spec);
  if (o.vanishes?.({ round: task.round, taskId: task.task_id })) {
    log(`round ${task.round}: vanishing mid-round (fault injection) until after the deadline`);
    throw new Vanished(Number(task.deadline_unix_ms) + 1000);
  }
  await ensureBackendFor(spec, { log });
  let base = modelCache.get(task.base_model_sha256);
  if (!base) {
    base = await conn.downloadModel(task.base_model_sha256, manifest);
    modelCache.clear();
    modelCache.set(task.base_model_sha256, base);
    o.onGlobalModel?.({ round: task.round - 1, spec, weights: base, sha256: task.base_model_sha256 });
  }
  let wanted = true;
  let progress = 0;
  // Why the operator's rules stopped training (paused, hours over, memory cap), if they did.
  let stoppedBy: Blocked | undefined;
  // Read through a function: it is set inside callbacks, where TypeScript's narrowing cannot follow.
  const haltedBy = (): Blocked | undefined => stoppedBy;
  const operatorStop = (): boolean => {
    stoppedBy ??= o.availability?.blocked();
    // memoryUsage.rss() alone is cheap enough to ask every batch; memoryUsage() walks the heap.
    if (!stoppedBy && caps.memory_mb !== undefined && overMemoryCap(caps, process.memoryUsage.rss())) {
      stoppedBy = { kind: 'OVER_CAP', reason: `over the memory cap: the node passed ${caps.memory_mb} MiB while training` };
    }
    return stoppedBy !== undefined;
  };
  const heartbeat = setInterval(() => {
    conn.heartbeat(task.task_id, progress).then(
      (stillWanted) => (wanted = stillWanted),
      () => {},
    );
  }, heartbeatMs);
  try {
    const result = await trainLocally({
      spec,
      baseWeights: base,
      data: o.data,
      epochs: training.epochs,
      batchSize: training.batch_size,
      learningRate: training.learning_rate,
      seed: training.seed,
      proximalMu: training.proximal_mu,
      threads,
      deadline: trainUntil,
      shouldStop: () => !wanted || (o.signal?.aborted ?? false) || operatorStop(),
      onProgress: (p) => (progress = p.examplesSeen / Math.max(1, o.data.numExamples * training.epochs)),
    });
    if (result.examplesTrained > 0) speed.examplesPerSecond = result.metrics.examples_per_second;
    if (!wanted) {
      log(`round ${task.round} closed before training finished; task dropped`);
      o.ledger?.append({ ...entry, event: 'dropped', at: Date.now(), reason: 'the round closed before training finished' });
      return;
    }
    if (o.signal?.aborted) {
      await decline('the node is shutting down', 'SHUTTING_DOWN');
      return;
    }
    const halted = haltedBy();
    if (halted) {
      await decline(halted.reason, halted.kind);
      return;
    }
    if (result.examplesTrained === 0) {
      await decline('no time to train a single batch before the deadline', 'TOO_SLOW');
      return;
    }
    const diverged = divergedTraining(result.metrics, o.data.numClasses);
    if (diverged) {
      await decline(diverged, 'DIVERGED');
      return;
    }
    if ((o.slowdown ?? 1) > 1) {
      const until = Date.now() + ((o.slowdown ?? 1) - 1) * result.metrics.seconds * 1000;
      // The wait stands in for slower training, so the operator's rules apply to it as to training.
      while (Date.now() < until && wanted && !o.signal?.aborted && !operatorStop()) {
        await new Promise((r) => setTimeout(r, Math.min(100, until - Date.now())));
      }
      const haltedWaiting = haltedBy();
      if (haltedWaiting) {
        await decline(haltedWaiting.reason, haltedWaiting.kind);
        return;
      }
      if (!wanted || o.signal?.aborted) {
        log(`round ${task.round}: task dropped while the straggler (fault injection) was waiting`);
        return;
      }
    }
    let delta: Float32Array = new Float32Array(base.length);
    for (let i = 0; i < delta.length; i++) delta[i] = result.weights[i]! - base[i]!;
    if (o.adversary) delta = await o.adversary({ round: task.round, delta, deadline: Number(task.deadline_unix_ms) });
    let updateDigest = '';
    const submitted = {
      ...entry,
      event: 'submitted' as const,
      examples: Math.min(o.data.numExamples, result.examplesTrained),
      examples_trained: result.examplesTrained,
      compute_seconds: result.metrics.seconds,
    };
    let message: string;
    try {
      message = await conn.submitUpdate(
        {
          taskId: task.task_id,
          experimentId: task.experiment_id,
          round: task.round,
          baseModelSha256: task.base_model_sha256,
          // FedAvg weighs a node by its data, not by how many passes it made over it.
          numExamples: o.claimedExamples ?? submitted.examples,
          manifest,
          delta,
          metrics: {
            loss: result.metrics.loss,
            accuracy: result.metrics.accuracy,
            train_seconds: result.metrics.seconds,
            examples_per_second: result.metrics.examples_per_second,
            epochs_completed: result.epochsCompleted,
            partial: result.partial,
          },
          onSigned: (digest) => (updateDigest = digest),
        },
        o.identity,
      );
    } catch (err) {
      const code = (err as { code?: number }).code;
      const refused = code === grpc.status.FAILED_PRECONDITION || code === grpc.status.INVALID_ARGUMENT || code === grpc.status.ALREADY_EXISTS;
      // An interrupted upload may still have landed: the ledger asks the aggregator later ("missing" if it did not).
      if (refused || updateDigest) {
        o.ledger?.append({ ...submitted, at: Date.now(), update_digest: updateDigest, accepted: !refused, message: (err as Error).message });
      }
      if (refused) {
        // The aggregator refused this update; the next task is a fresh start.
        log(`round ${task.round}: update refused: ${(err as Error).message}`);
        return;
      }
      throw err;
    }
    o.ledger?.append({ ...submitted, at: Date.now(), update_digest: updateDigest, accepted: true, message });
    log(
      `round ${task.round}: trained ${result.examplesTrained} examples in ${result.metrics.seconds.toFixed(1)} s ` +
        `(loss ${result.metrics.loss.toFixed(3)}, ${Math.round(result.metrics.examples_per_second)} ex/s${result.threads > 1 ? ` on ${result.threads} threads` : ''}); ${message} ` +
        `after ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
  } finally {
    clearInterval(heartbeat);
  }
}

/**
 * Asks the aggregator about this node's updates that await a verdict, and
 * records each final answer with whether its signed round record checks out.
 * A failure here never stops the node: the next call asks again.
 */
async function settleOutcomes(conn: AggregatorConnection, ledger: Ledger, experiment: string, aggregatorKey: Uint8Array, log: (msg: string) => void): Promise<void> {
  for (const submitted of ledger.awaitingOutcome(experiment)) {
    try {
      const entry = outcomeEntry(submitted, await conn.taskOutcome(submitted.task), aggregatorKey);
      if (!entry) continue;
      ledger.append(entry);
      if (entry.problem) log(`round ${entry.round}: update ${entry.task} NOT credited: ${entry.problem}`);
    } catch (err) {
      const code = (err as { code?: number }).code;
      if (code === grpc.status.NOT_FOUND || code === grpc.status.PERMISSION_DENIED) {
        ledger.append({ ...submitted, event: 'outcome', at: Date.now(), verdict: 'missing', reason: (err as Error).message, weight: 0, confirmed: false });
      } else {
        log(`could not ask about update ${submitted.task}: ${(err as Error).message}`);
        return;
      }
    }
  }
}

// Puts the aggregator together for one run: database, model, strategy, round
// engine and gRPC server, and writes the run's summary when it ends.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initBackend } from '../core/backend.js';
import { evaluate } from '../core/model/evaluate.js';
import type { Experiment } from './experiment/schema.js';
import { initialWeights } from '../core/model/build.js';
import { numParams, weightManifest, type ModelSpec, type WeightSpec } from '../core/model/spec.js';
import { modelSpec } from '../core/model/zoo.js';
import { softwareVersions } from '../core/version.js';
import type { Dataset } from '../core/dataset.js';
import { publicKeyToString, type Identity } from '../core/signing/keys.js';
import type { AdmissionPolicy } from './nodes/joining.js';
import { serverCredentials, type ServerTlsFiles } from '../core/tls.js';
import { BufferedEngine } from './rounds/buffered.js';
import type { Engine } from './rounds/engine.js';
import { RoundEngine, type EngineEvent, type EngineOptions, type RoundRecord } from './rounds/synchronous.js';
import { bindAggregatorServer, type CallObserver } from './server.js';
import { Sessions } from './nodes/sessions.js';
import { inspectDatabaseCopy, openDatabase } from './store/db.js';
import { RunStore } from './store/run-store.js';
import { strategyFor } from './strategies/index.js';
import { strategyNamed } from './strategies/registry.js';
import type { EngineKind } from './strategies/strategy.js';
import { resumePoint, type ResumePoint } from './resume.js';
import { UPDATE_BLOBS_DIR, UpdateBlobs } from './store/update-blobs.js';
import { explainStorageFailure } from './store/storage-errors.js';
import { float32ToBytes, sha256Hex } from '../core/tensor-codec.js';
import { sign, signatureToString } from '../core/signing/ed25519.js';
import { RUN_TAG, runDigest } from '../core/signing/layouts.js';
import {
  CHECKPOINTS_DIR,
  completeSignedRecords,
  crossCheck,
  damagedDatabase,
  DATABASE_FILE,
  disagreement,
  refuseNewRunOver,
  RunDirectoryError,
  runEvidence,
  surveyRunDirectory,
} from './run-directory.js';
import { RECORDS_DIR, writeRunRecordFile } from './store/signed-records.js';
import { DEFAULT_PACE, pollRetryAfterMs, type PacePolicy } from './rounds/pace.js';
import { DEFAULT_CONNECTION_LIMITS, type ConnectionLimits, type ConnectionStats } from './transport/connection-guard.js';
import { DEFAULT_REFUSAL_BOUNDS, type RefusalBounds } from './nodes/refusal-log.js';

/** The longest a node's PollTask is held open before it is told to come back. */
const MAX_POLL_MS = 20_000;

/** The engine each kind of strategy (its registry entry's `engine`) runs on. */
const ENGINES: Record<EngineKind, new (o: EngineOptions) => Engine> = { synchronous: RoundEngine, buffered: BufferedEngine };

export interface RunSummary {
  run_id: string;
  aggregator_public_key: string;
  experiment: Experiment;
  backend: string;
  seed: number;
  software: Record<string, string>;
  rounds: (RoundRecord & { cumulative_seconds: number })[];
  final_accuracy: number | null;
  best_accuracy: number | null;
  target: { accuracy: number; within_rounds: number; reached_at_round: number | null; met: boolean } | null;
  wall_seconds: number;
  mean_overhead_fraction: number | null;
  checkpoints: string;
  database: string;
}

export interface AggregatorOptions {
  experiment: Experiment;
  runDir: string;
  runId: string;
  /** The experiment file's text, written to the run directory as experiment.json when the run is created (a resumed run keeps its own). */
  experimentText?: string;
  test: Dataset;
  /** The aggregator's key: signs tasks and round records. */
  identity: Identity;
  admission?: AdmissionPolicy;
  host?: string;
  port?: number;
  /** TLS certificate and key (and a client CA for mutual TLS); plaintext without. */
  tls?: ServerTlsFiles;
  heartbeatIntervalMs?: number;
  /** How long the first round waits for a full selection before starting with a quorum. */
  firstRoundGraceMs?: number;
  /** Nodes the first round waits for (within firstRoundGraceMs) before selecting, when more are coming than it selects. */
  firstRoundNodes?: number;
  /**
   * After the last round, keep answering "finished" for up to this long until every registered
   * node has heard it: a node in reconnect backoff (after an aggregator restart, say) would
   * otherwise find nobody there and retry forever. Default 0.
   */
  lingerMs?: number;
  /** Pace steering; omitted fields take DEFAULT_PACE's. */
  pace?: Partial<PacePolicy>;
  /** How many refused calls are kept on record; omitted fields take DEFAULT_REFUSAL_BOUNDS'. */
  refusalBounds?: Partial<RefusalBounds>;
  log?: (msg: string) => void;
  onEvent?: (event: EngineEvent) => void;
  /** Told every gRPC call's method, status and duration (request metrics). */
  onCall?: CallObserver;
  /** Bounds on connections; DEFAULT_CONNECTION_LIMITS's where absent. */
  connections?: Partial<ConnectionLimits>;
}

/** The pace policy, with retries kept inside half a lease so an idle node never expires between two polls. */
function pacePolicy(leaseMs: number, given: Partial<PacePolicy> = {}): PacePolicy {
  const p = { ...DEFAULT_PACE, ...given };
  const maxRetryMs = Math.min(p.maxRetryMs, Math.floor(leaseMs / 2));
  return { ...p, maxRetryMs, minRetryMs: Math.min(p.minRetryMs, maxRetryMs) };
}

export interface RunningAggregator {
  port: number;
  backend: string;
  /** Resolves with the summary once the last round is committed (or the run is stopped). */
  done: Promise<RunSummary>;
  /** Connections held, refused and timed out, and the file-descriptor budget (for /metrics). */
  connections(): ConnectionStats;
  stop(): Promise<void>;
}

/**
 * Starts the run's aggregator. Its storage failing (a full disk, a database that is not crowdfl's or is
 * damaged), at the start or during the run, ends it with a UserError naming the file and what to do.
 */
export async function startAggregator(o: AggregatorOptions): Promise<RunningAggregator> {
  const where = { database: join(o.runDir, 'crowdfl.db'), runDir: o.runDir };
  try {
    return await startRun(o, where);
  } catch (err) {
    throw explainStorageFailure(err, where);
  }
}

async function startRun(o: AggregatorOptions, where: { database: string; runDir: string }): Promise<RunningAggregator> {
  const { experiment, runDir, runId, test } = o;
  const log = o.log ?? (() => {});
  // First, so a rule the quorum cannot satisfy is refused before anything is written.
  const strategy = strategyFor(experiment);
  const started = Date.now();
  // Then the port, so a busy one is refused before anything is written either.
  const bound = await bindAggregatorServer({
    host: o.host,
    port: o.port,
    credentials: serverCredentials(o.tls),
    connections: { ...DEFAULT_CONNECTION_LIMITS, ...o.connections },
  });
  let opened: OpenedRun;
  try {
    opened = await openRun(o, started, log);
  } catch (err) {
    await bound.close();
    throw err;
  }
  const { backend, spec, manifest, store, closeDb, resumed, initial, checkpointsDir, recordsDir } = opened;
  const heartbeatIntervalMs = o.heartbeatIntervalMs ?? 5000;
  const leaseMs = heartbeatIntervalMs * 4;
  const pace = pacePolicy(leaseMs, o.pace);
  const sessions: Sessions = new Sessions(leaseMs, () => pollRetryAfterMs(sessions.idle().length, MAX_POLL_MS, pace, Math.random));
  const engineOptions: EngineOptions = {
    experiment,
    runId,
    identity: o.identity,
    topology: spec.topology,
    manifest,
    initialWeights: initial,
    startRound: resumed?.nextRound,
    previousWeights: resumed?.previousWeights,
    serverState: resumed?.serverState,
    strategy,
    store,
    sessions,
    checkpointsDir,
    recordsDir,
    updateBlobs: experiment.record.update_tensors ? new UpdateBlobs(join(runDir, UPDATE_BLOBS_DIR)) : undefined,
    evaluate: (weights) => evaluate(spec, weights, test),
    onEvent: o.onEvent,
    firstRoundGraceMs: o.firstRoundGraceMs,
    firstRoundNodes: o.firstRoundNodes,
  };
  const engine: Engine = new ENGINES[strategyNamed(experiment.strategy.name).engine](engineOptions);
  // The first failure of the run's storage met while answering a node; the run stops on it.
  let storageFailure: unknown;
  const stopForStorage = (err: unknown) => {
    if (storageFailure !== undefined) return;
    storageFailure = explainStorageFailure(err, where);
    log(`stopping the run: ${(storageFailure as Error)?.message ?? String(storageFailure)}`);
    engine.stop();
  };
  const server = bound.serve({
    engine,
    sessions,
    store,
    experimentId: runId,
    identity: o.identity,
    admission: o.admission ?? { mode: 'open' },
    taskDemand: { parameters: numParams(spec), epochs: experiment.training.epochs },
    heartbeatIntervalMs,
    maxPollMs: MAX_POLL_MS,
    pace,
    refusalBounds: { ...DEFAULT_REFUSAL_BOUNDS, ...o.refusalBounds },
    log,
    onCall: o.onCall,
    onStorageFailure: stopForStorage,
  });
  log(`aggregator for ${experiment.name} (run ${runId}) listening on ${o.host ?? '127.0.0.1'}:${server.port} (${o.tls ? (o.tls.clientCa ? 'mutual TLS' : 'TLS') : 'plaintext'}), backend ${backend}`);

  let stopped = false;
  const done = (async () => {
    let records: RoundRecord[] = [];
    try {
      records = [...(resumed?.records ?? []), ...(await engine.run())];
      if (storageFailure !== undefined) throw storageFailure;
      store.finishRun(runId, stopped ? 'failed' : 'finished');
    } catch (err) {
      const failure = explainStorageFailure(err, where);
      try {
        store.finishRun(runId, 'failed');
      } catch (second) {
        // On a full disk this fails too; the run's row then still says running, which resuming expects anyway.
        log(`could not mark run ${runId} failed in ${where.database}: ${(second as Error)?.message ?? String(second)}`);
      }
      throw failure;
    } finally {
      // Health checks say NOT_SERVING from here: the run takes no more work, it only tells nodes it is over.
      server.setServing(false);
      // Give polling nodes a moment to hear that the experiment is over, and lingering ones up to lingerMs.
      await new Promise((r) => setTimeout(r, 300));
      const lingerUntil = Date.now() + (o.lingerMs ?? 0);
      const registered = () => store.nodeRows().filter((n) => n.status === 'active').map((n) => n.nodeId);
      while (Date.now() < lingerUntil && !sessions.allHeardFinished(registered())) await new Promise((r) => setTimeout(r, 200));
      await server.close();
      closeDb();
    }
    const summary = summarise(runId, publicKeyToString(o.identity.publicKey), experiment, backend, records, (Date.now() - started) / 1000, runDir);
    try {
      writeFileSync(join(runDir, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
    } catch (err) {
      throw explainStorageFailure(err, where);
    }
    return summary;
  })();
  return {
    port: server.port,
    backend,
    done,
    connections: () => server.connections(),
    stop: async () => {
      stopped = true;
      engine.stop();
      await done.catch(() => {});
    },
  };
}

interface OpenedRun {
  backend: string;
  spec: ModelSpec;
  manifest: WeightSpec[];
  store: RunStore;
  closeDb: () => void;
  /** Set when an existing run is continued. */
  resumed?: ResumePoint;
  /** The model the first round to run starts from. */
  initial: Float32Array;
  checkpointsDir: string;
  recordsDir: string;
}

/**
 * Creates the run, or takes it back after a restart. Nothing is written until the run directory has
 * been checked (run-directory.ts): a new run only in a directory that holds none, a resumed one only
 * when its database, checked on a copy, agrees with the checkpoints and signed records beside it.
 */
async function openRun(o: AggregatorOptions, started: number, log: (msg: string) => void): Promise<OpenedRun> {
  const { experiment, runDir, runId, test } = o;
  const backend = await initBackend(experiment.backend, { log });
  const spec = modelSpec(experiment.model, { featureShape: test.featureShape, numClasses: test.numClasses });
  const manifest = weightManifest(spec);
  const databasePath = join(runDir, DATABASE_FILE);
  const checkpointsDir = join(runDir, CHECKPOINTS_DIR);
  const recordsDir = join(runDir, RECORDS_DIR);
  const aggregatorPublicKey = publicKeyToString(o.identity.publicKey);
  const experimentJson = JSON.stringify(experiment);
  const evidence = surveyRunDirectory(runDir);

  let resumed: ResumePoint | undefined;
  if (evidence.database) {
    const inspection = inspectDatabaseCopy(databasePath);
    try {
      if (inspection.check.problems.length > 0) throw damagedDatabase(runId, evidence, inspection.check);
      if (!inspection.db) throw damagedDatabase(runId, evidence, { pragma: inspection.check.pragma, problems: [inspection.unreadable ?? 'unreadable'] });
      const copy = new RunStore(inspection.db);
      const run = copy.getRun(runId);
      if (run) {
        const disagreements = crossCheck(copy, run, evidence);
        if (disagreements.length > 0) throw disagreement(runId, evidence, copy, disagreements);
        resumed = resumePoint(copy, run, experiment, aggregatorPublicKey, checkpointsDir, () => initialWeights(spec, experiment.seed));
      } else if (inspection.rows > 0 || runEvidence({ ...evidence, database: false, walBytes: undefined }).length > 0) {
        // (A database that records nothing, beside nothing else, has nothing to overwrite: the run starts in it.)
        const others = copy.runRows().map((r) => r.id);
        const note =
          inspection.tables === 0
            ? `${DATABASE_FILE}, holding no tables at all (what the run wrote was still in ${DATABASE_FILE}-wal, which is ${evidence.walBytes === undefined ? 'missing' : `${evidence.walBytes} bytes`})`
            : `${DATABASE_FILE}, holding no run ${runId}${others.length ? ` (it holds ${others.join(', ')})` : ''}`;
        throw refuseNewRunOver(runId, evidence, note);
      }
    } finally {
      inspection.close();
    }
  } else if (runEvidence(evidence).length > 0) {
    throw refuseNewRunOver(runId, evidence);
  }

  // Checked: from here on the run directory is written.
  mkdirSync(runDir, { recursive: true });
  const { db, close: closeDb } = openDatabase(databasePath);
  const store = new RunStore(db);
  try {
    if (resumed) {
      const rounds = store.committedRounds(runId);
      if (rounds.length !== resumed.records.length || rounds.at(-1)?.roundDigest !== resumed.records.at(-1)?.round_digest) {
        throw new RunDirectoryError(
          `run ${runId}'s database changed while it was being checked (${resumed.records.length} committed rounds, now ${rounds.length}): is another aggregator running this run? Stop it and start again`,
        );
      }
      store.resumeRun(runId);
      // Runs from before records/ existed, and a commit whose record a crash kept from disk.
      const written = completeSignedRecords(store, store.getRun(runId)!, evidence.records, recordsDir);
      if (written > 0) log(`wrote ${written} missing signed record${written === 1 ? '' : 's'} to ${recordsDir} from the database`);
      log(`resuming run ${runId} at round ${resumed.nextRound} of ${experiment.rounds} (${resumed.records.length} rounds committed before)`);
      return { backend, spec, manifest, store, closeDb, resumed, initial: resumed.weights, checkpointsDir, recordsDir };
    }
    if (o.experimentText !== undefined) writeFileSync(join(runDir, 'experiment.json'), o.experimentText);
    const initial = initialWeights(spec, experiment.seed);
    const initialModelSha256 = sha256Hex(float32ToBytes(initial));
    const signed = {
      experiment_id: runId,
      experiment_sha256: sha256Hex(Buffer.from(experimentJson)),
      seed: experiment.seed,
      initial_model_sha256: initialModelSha256,
    };
    const runSignature = signatureToString(sign(runDigest(signed), o.identity));
    store.createRun({
      id: runId,
      experimentName: experiment.name,
      experimentJson,
      seed: experiment.seed,
      initialModelSha256,
      runSignature,
      backend,
      aggregatorPublicKey,
      software: JSON.stringify(softwareVersions()),
      status: 'running',
      startedAt: started,
    });
    writeRunRecordFile(recordsDir, { layout: RUN_TAG, ...signed, run_signature: runSignature, aggregator_public_key: aggregatorPublicKey, started_at: started });
    return { backend, spec, manifest, store, closeDb, initial, checkpointsDir, recordsDir };
  } catch (err) {
    closeDb();
    throw err;
  }
}

export function summarise(
  runId: string,
  aggregatorPublicKey: string,
  experiment: Experiment,
  backend: string,
  records: RoundRecord[],
  wallSeconds: number,
  runDir: string,
): RunSummary {
  let cumulative = 0;
  const rounds = records.map((r) => ({ ...r, cumulative_seconds: (cumulative += r.seconds) }));
  const last = records.at(-1);
  const target = experiment.target;
  const reached = target ? records.find((r) => r.accuracy >= target.accuracy)?.round ?? null : null;
  const fractions = records.filter((r) => r.seconds > 0).map((r) => r.overhead_seconds / r.seconds);
  return {
    run_id: runId,
    aggregator_public_key: aggregatorPublicKey,
    experiment,
    backend,
    seed: experiment.seed,
    software: softwareVersions(),
    rounds,
    final_accuracy: last?.accuracy ?? null,
    best_accuracy: records.length ? Math.max(...records.map((r) => r.accuracy)) : null,
    target: target
      ? { ...target, reached_at_round: reached, met: reached !== null && reached <= target.within_rounds }
      : null,
    wall_seconds: wallSeconds,
    mean_overhead_fraction: fractions.length ? fractions.reduce((a, b) => a + b, 0) / fractions.length : null,
    checkpoints: join(runDir, 'checkpoints'),
    database: join(runDir, 'crowdfl.db'),
  };
}

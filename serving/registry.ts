// Models being served: name → versions, where a version is the training round
// that produced the checkpoint. Checkpoints are read as data and their
// topology goes through the same allowlist nodes apply (parseModelJson), so
// serving a checkpoint never runs code from it.
import { existsSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import Database from 'better-sqlite3';
import { drizzle } from 'drizzle-orm/better-sqlite3';
import * as tf from '@tensorflow/tfjs';
import { checkpointDirName, readCheckpointWeights } from '../aggregator/store/checkpoints.js';
import { RunStore } from '../aggregator/store/run-store.js';
import * as schema from '../aggregator/store/schema.js';
import { buildModel, setFlatWeights } from '../core/model/build.js';
import { inputShape, numOutputs, outputsProbabilities, weightManifest, type ModelSpec } from '../core/model/spec.js';
import { parseModelJson } from '../core/model/zoo.js';
import { MicroBatcher, type BatcherOptions } from './batcher.js';
import { ServingError } from './errors.js';
import type { ServingMetrics } from './metrics.js';

/** A checkpoint or run that cannot be served; the message says why. */
export class ServingLoadError extends Error {
  override name = 'ServingLoadError';
}

export interface CheckpointContents {
  spec: ModelSpec;
  weights: Float32Array;
  sha256: string;
}

/** Reads a tfjs layers checkpoint (model.json + weights.bin) and checks it against the model allowlist. */
export function readServableCheckpoint(dir: string): CheckpointContents {
  const modelPath = join(dir, 'model.json');
  if (!existsSync(modelPath) || !existsSync(join(dir, 'weights.bin'))) {
    throw new ServingLoadError(`${dir} is not a checkpoint: expected model.json and weights.bin`);
  }
  let modelJson: { modelTopology?: unknown; weightsManifest?: { weights?: { name: string; shape: number[] }[] }[] };
  try {
    modelJson = JSON.parse(readFileSync(modelPath, 'utf8')) as typeof modelJson;
  } catch (err) {
    throw new ServingLoadError(`${modelPath} is not valid JSON: ${(err as Error).message}`);
  }
  let spec: ModelSpec;
  try {
    spec = parseModelJson(JSON.stringify(modelJson.modelTopology ?? null));
  } catch (err) {
    throw new ServingLoadError(`${modelPath}: ${(err as Error).message}`);
  }
  const expected = weightManifest(spec).map((w) => `${w.name}[${w.shape.join(',')}]`).join(' ');
  const declared = (modelJson.weightsManifest ?? []).flatMap((g) => g.weights ?? []).map((w) => `${w.name}[${w.shape.join(',')}]`).join(' ');
  if (declared !== expected) throw new ServingLoadError(`${modelPath}: weightsManifest lists ${declared || 'nothing'} but the topology has ${expected}`);
  const { weights, sha256 } = readCheckpointWeights(dir);
  const params = weightManifest(spec).reduce((n, w) => n + w.shape.reduce((a, b) => a * b, 1), 0);
  if (weights.length !== params) throw new ServingLoadError(`${dir}/weights.bin holds ${weights.length} values but the model has ${params} parameters`);
  return { spec, weights, sha256 };
}

export interface CommittedModel {
  round: number;
  dir: string;
  sha256: string;
}

/**
 * The run's current global model: its newest committed round. Read through a
 * read-only connection so serving never migrates or locks the aggregator's database.
 */
export function newestCommittedModel(runDir: string): CommittedModel | undefined {
  const dbPath = join(runDir, 'crowdfl.db');
  if (!existsSync(dbPath)) throw new ServingLoadError(`${runDir} is not a run: it holds no crowdfl.db`);
  const sqlite = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    const rounds = new RunStore(drizzle(sqlite, { schema })).committedRounds(basename(runDir.replace(/\/+$/, '')));
    const last = rounds.at(-1);
    return last && { round: last.round, dir: join(runDir, 'checkpoints', checkpointDirName(last.round)), sha256: last.modelSha256 };
  } finally {
    sqlite.close();
  }
}

/** One loaded model version with its own batch queue. */
export class ServedVersion {
  readonly inputShape: number[];
  readonly inputSize: number;
  readonly numOutputs: number;
  readonly batcher: MicroBatcher<Float32Array, Float32Array>;
  private readonly probabilities: boolean;

  constructor(
    readonly name: string,
    readonly version: number,
    readonly sha256: string,
    readonly spec: ModelSpec,
    private readonly model: tf.LayersModel,
    batching: BatcherOptions,
    metrics: ServingMetrics,
  ) {
    this.inputShape = inputShape(spec);
    this.inputSize = this.inputShape.reduce((a, b) => a * b, 1);
    this.numOutputs = numOutputs(spec);
    this.probabilities = outputsProbabilities(spec);
    this.batcher = new MicroBatcher(batching, (rows) => Promise.resolve(this.runBatch(rows)), (n, seconds) => metrics.recordBatch(name, n, seconds));
  }

  /**
   * Class probabilities for each row (zoo models output logits, so softmax is
   * applied here). Rows whose batch has not started by `deadline` (performance.now()) are not run.
   */
  predict(rows: Float32Array[], deadline?: number): Promise<Float32Array[]> {
    return this.batcher.submit(rows, deadline);
  }

  dispose(): void {
    this.model.dispose();
  }

  private runBatch(rows: Float32Array[]): Float32Array[] {
    const flat = new Float32Array(rows.length * this.inputSize);
    rows.forEach((row, i) => flat.set(row, i * this.inputSize));
    const scores = tf.tidy(() => {
      const output = this.model.apply(tf.tensor(flat, [rows.length, ...this.inputShape], 'float32'), { training: false }) as tf.Tensor2D;
      return this.probabilities ? output : tf.softmax(output);
    });
    try {
      const values = scores.dataSync() as Float32Array;
      return rows.map((_, i) => values.subarray(i * this.numOutputs, (i + 1) * this.numOutputs));
    } finally {
      scores.dispose();
    }
  }
}

/** A version's lifecycle as TF Serving reports it in GET /v1/models/NAME and GetModelStatus. */
export type VersionState = 'LOADING' | 'AVAILABLE' | 'UNLOADING' | 'END';

export interface VersionStatus {
  version: number;
  state: VersionState;
  /** Why the version ended without ever being available (its load failed); empty otherwise. */
  error: string;
}

interface Slot {
  state: VersionState;
  served?: ServedVersion;
  error: string;
}

export interface RegistryOptions {
  batching: BatcherOptions;
  /** Versions kept per name; loading a newer one retires (after draining) the oldest beyond this. */
  keepVersions: number;
}

/** How many ended versions per name stay listed in status answers. */
const ENDED_KEPT = 4;

export class ModelRegistry {
  private readonly models = new Map<string, Map<number, Slot>>();

  constructor(
    private readonly options: RegistryOptions,
    private readonly metrics: ServingMetrics,
  ) {
    if (!Number.isInteger(options.keepVersions) || options.keepVersions < 1) throw new RangeError('keepVersions must be a positive integer');
  }

  /**
   * Loads a checkpoint as NAME version VERSION. Requests already queued on older
   * versions finish on them; new requests without a version go to the newest.
   */
  async load(name: string, version: number, dir: string, expectedSha256?: string): Promise<ServedVersion> {
    return this.loadContents(name, version, async () => {
      const contents = readServableCheckpoint(dir);
      if (expectedSha256 !== undefined && contents.sha256 !== expectedSha256) {
        throw new ServingLoadError(`${dir}/weights.bin has SHA-256 ${contents.sha256} but the run recorded ${expectedSha256} for it`);
      }
      return contents;
    });
  }

  /**
   * The same, from a model in memory (a node serving the global model it
   * downloaded) or on its way (`contents` a function resolving to it). The
   * version is LOADING until it resolves, then AVAILABLE; a failed load ends it
   * (state END, with the reason) and is rethrown.
   */
  async loadContents(name: string, version: number, contents: CheckpointContents | (() => Promise<CheckpointContents>)): Promise<ServedVersion> {
    if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new ServingLoadError(`model name ${JSON.stringify(name)} may only use letters, digits, '_', '.' and '-'`);
    const versions = this.models.get(name) ?? new Map<number, Slot>();
    this.models.set(name, versions);
    const previous = versions.get(version);
    const replaced = previous?.state === 'AVAILABLE' ? previous : undefined;
    const slot: Slot = { state: 'LOADING', error: '' };
    // A reload of a served version keeps answering from the old copy until the new one is ready.
    if (!replaced) versions.set(version, slot);
    let served: ServedVersion;
    try {
      const { spec, weights, sha256 } = typeof contents === 'function' ? await contents() : contents;
      const model = await buildModel(spec);
      setFlatWeights(model, weights);
      served = new ServedVersion(name, version, sha256, spec, model, this.options.batching, this.metrics);
    } catch (err) {
      if (versions.get(version) === slot) {
        slot.state = 'END';
        slot.error = `loading version ${version} failed: ${(err as Error).message}`;
        this.forgetEnded(versions);
      }
      throw err;
    }
    slot.state = 'AVAILABLE';
    slot.served = served;
    versions.set(version, slot);
    const live = [...versions.entries()].filter(([, s]) => s.state === 'AVAILABLE').sort(([a], [b]) => b - a);
    const retired = live.slice(this.options.keepVersions).map(([, s]) => s);
    if (replaced) retired.push(replaced);
    for (const old of retired) this.retire(name, old);
    this.metrics.setVersion(name, this.newest(name)?.version ?? version);
    this.metrics.watchQueue(name, () => [...(this.models.get(name)?.values() ?? [])].reduce((n, s) => n + (s.served?.batcher.depth ?? 0), 0));
    return served;
  }

  names(): string[] {
    return [...this.models.keys()];
  }

  /** Makes `name` known before it has any version (a followed run yet to commit a round): requests get 503, not 404. */
  expect(name: string): void {
    if (!this.models.has(name)) this.models.set(name, new Map());
  }

  /** Whether `name` is known in any state (cheap: on every request's metrics path). */
  has(name: string): boolean {
    return this.models.has(name);
  }

  /** Every version of `name` known to the registry with its state, newest first; undefined for an unknown name. */
  status(name: string): VersionStatus[] | undefined {
    const versions = this.models.get(name);
    return versions && [...versions.entries()].sort(([a], [b]) => b - a).map(([version, s]) => ({ version, state: s.state, error: s.error }));
  }

  /** Versions of `name` that can answer (AVAILABLE), newest first; undefined for an unknown name. */
  versions(name: string): ServedVersion[] | undefined {
    const versions = this.models.get(name);
    if (!versions) return undefined;
    return [...versions.values()]
      .filter((s) => s.state === 'AVAILABLE')
      .map((s) => s.served as ServedVersion)
      .sort((a, b) => b.version - a.version);
  }

  newest(name: string): ServedVersion | undefined {
    return this.versions(name)?.[0];
  }

  get(name: string, version: number): ServedVersion | undefined {
    const slot = this.models.get(name)?.get(version);
    return slot?.state === 'AVAILABLE' ? slot.served : undefined;
  }

  /**
   * The version a predict request for NAME[/VERSION] runs on, or a ServingError
   * saying why there is none: unknown name or version (not_found), or nothing
   * loaded yet (unavailable, so clients retry rather than give up).
   */
  resolve(name: string, version?: number): ServedVersion {
    const slots = this.models.get(name);
    if (!slots) {
      throw new ServingError('not_found', `no model named ${JSON.stringify(name)}; serving ${this.names().map((n) => JSON.stringify(n)).join(', ') || 'nothing'}`);
    }
    const listing = (): string =>
      [...slots.entries()]
        .sort(([a], [b]) => b - a)
        .map(([v, s]) => `${v} (${s.state})`)
        .join(', ');
    if (version === undefined) {
      const newest = this.newest(name);
      if (newest) return newest;
      if (slots.size === 0) throw new ServingError('unavailable', `model ${name} has no version yet: its run has not committed a round; retry later`);
      const loading = [...slots.values()].some((s) => s.state === 'LOADING');
      throw new ServingError(
        'unavailable',
        loading
          ? `model ${name} is still loading (versions: ${listing()}); retry shortly`
          : `model ${name} has no version available (versions: ${listing()}${[...slots.values()].map((s) => s.error).filter(Boolean).map((e) => `; ${e}`).join('')})`,
      );
    }
    const slot = slots.get(version);
    if (slot?.state === 'AVAILABLE') return slot.served as ServedVersion;
    if (slot?.state === 'LOADING') throw new ServingError('unavailable', `model ${name} version ${version} is still loading; retry shortly`);
    throw new ServingError('not_found', `model ${name} has no version ${version} to serve; versions: ${listing() || 'none'}`);
  }

  /** Frees every model once its queue has drained. */
  async close(): Promise<void> {
    for (const versions of this.models.values()) {
      for (const slot of versions.values()) {
        if (!slot.served) continue;
        await slot.served.batcher.drained();
        slot.served.dispose();
      }
    }
    this.models.clear();
  }

  /** UNLOADING while requests already queued on it finish, then END and freed. */
  private retire(name: string, slot: Slot): void {
    const served = slot.served as ServedVersion;
    slot.state = 'UNLOADING';
    void served.batcher.drained().then(() => {
      served.dispose();
      slot.served = undefined;
      slot.state = 'END';
      const versions = this.models.get(name);
      if (versions) this.forgetEnded(versions);
    });
  }

  private forgetEnded(versions: Map<number, Slot>): void {
    const ended = [...versions.entries()].filter(([, s]) => s.state === 'END').sort(([a], [b]) => b - a);
    for (const [v] of ended.slice(ENDED_KEPT)) versions.delete(v);
  }
}

/**
 * Loads the run's newest committed round under `name` unless that version is
 * already served; resolves to the round loaded, or undefined when nothing changed.
 */
export async function loadNewestRound(registry: ModelRegistry, name: string, runDir: string): Promise<number | undefined> {
  const newest = newestCommittedModel(runDir);
  if (!newest) {
    // A followed run that has not committed yet is expected (registry.expect); anything else is a mistake.
    if (!registry.has(name)) throw new ServingLoadError(`${runDir} has no committed round yet; add --follow to wait for its first`);
    return undefined;
  }
  if (newest.round <= (registry.newest(name)?.version ?? -1)) return undefined;
  await registry.load(name, newest.round, newest.dir, newest.sha256);
  return newest.round;
}

/**
 * Every `intervalMs`, loads a newer committed round of the run when there is
 * one (a hot swap that drops no request: see ModelRegistry.load). Returns a
 * function that stops following.
 */
export function followRun(registry: ModelRegistry, name: string, runDir: string, intervalMs: number, log: (msg: string) => void): () => void {
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    loadNewestRound(registry, name, runDir)
      .then((round) => {
        if (round !== undefined) log(`serving ${name} version ${round} (model ${registry.get(name, round)?.sha256.slice(0, 12) ?? '?'})`);
      })
      // The current model keeps serving; the next check tries again.
      .catch((err: unknown) => log(`could not load the newest round of ${runDir}: ${(err as Error).message}`))
      .finally(() => {
        busy = false;
      });
  }, intervalMs);
  return () => clearInterval(timer);
}

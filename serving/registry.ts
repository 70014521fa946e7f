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
import { buildModel, inputShape, numOutputs, outputsProbabilities, setFlatWeights, weightManifest } from '../core/model.js';
import { parseModelJson, type ModelSpec } from '../core/model-zoo.js';
import { MicroBatcher, type BatcherOptions } from './batcher.js';
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
  readonly batcher: MicroBatcher<Float32Array, number[]>;
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
    this.batcher = new MicroBatcher(batching, (rows) => Promise.resolve(this.runBatch(rows)), (n) => metrics.recordBatch(name, n));
  }

  /** Class probabilities for each row (zoo models output logits, so softmax is applied here). */
  predict(rows: Float32Array[]): Promise<number[][]> {
    return this.batcher.submit(rows);
  }

  dispose(): void {
    this.model.dispose();
  }

  private runBatch(rows: Float32Array[]): number[][] {
    const flat = new Float32Array(rows.length * this.inputSize);
    rows.forEach((row, i) => flat.set(row, i * this.inputSize));
    const scores = tf.tidy(() => {
      const output = this.model.apply(tf.tensor(flat, [rows.length, ...this.inputShape], 'float32'), { training: false }) as tf.Tensor2D;
      return this.probabilities ? output : tf.softmax(output);
    });
    try {
      const values = scores.dataSync();
      return rows.map((_, i) => Array.from(values.subarray(i * this.numOutputs, (i + 1) * this.numOutputs)));
    } finally {
      scores.dispose();
    }
  }
}

export interface RegistryOptions {
  batching: BatcherOptions;
  /** Versions kept per name; loading a newer one retires (after draining) the oldest beyond this. */
  keepVersions: number;
}

export class ModelRegistry {
  private readonly models = new Map<string, Map<number, ServedVersion>>();

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
    const contents = readServableCheckpoint(dir);
    if (expectedSha256 !== undefined && contents.sha256 !== expectedSha256) {
      throw new ServingLoadError(`${dir}/weights.bin has SHA-256 ${contents.sha256} but the run recorded ${expectedSha256} for it`);
    }
    return this.loadContents(name, version, contents);
  }

  /** The same, from a model already in memory (a node serving the global model it downloaded). */
  async loadContents(name: string, version: number, { spec, weights, sha256 }: CheckpointContents): Promise<ServedVersion> {
    if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new ServingLoadError(`model name ${JSON.stringify(name)} may only use letters, digits, '_', '.' and '-'`);
    const model = await buildModel(spec);
    setFlatWeights(model, weights);
    const served = new ServedVersion(name, version, sha256, spec, model, this.options.batching, this.metrics);
    const versions = this.models.get(name) ?? new Map<number, ServedVersion>();
    const replaced = versions.get(version);
    versions.set(version, served);
    this.models.set(name, versions);
    const retired = [...versions.keys()].sort((a, b) => b - a).slice(this.options.keepVersions).map((v) => versions.get(v) as ServedVersion);
    for (const old of retired) versions.delete(old.version);
    if (replaced) retired.push(replaced);
    for (const old of retired) void old.batcher.drained().then(() => old.dispose());
    this.metrics.setVersion(name, this.newest(name)?.version ?? version);
    this.metrics.watchQueue(name, () => [...(this.models.get(name)?.values() ?? [])].reduce((n, v) => n + v.batcher.depth, 0));
    return served;
  }

  names(): string[] {
    return [...this.models.keys()];
  }

  /** Versions of `name`, newest first; undefined for an unknown name. */
  versions(name: string): ServedVersion[] | undefined {
    const versions = this.models.get(name);
    return versions && [...versions.values()].sort((a, b) => b.version - a.version);
  }

  newest(name: string): ServedVersion | undefined {
    return this.versions(name)?.[0];
  }

  get(name: string, version: number): ServedVersion | undefined {
    return this.models.get(name)?.get(version);
  }

  /** Frees every model once its queue has drained. */
  async close(): Promise<void> {
    for (const versions of this.models.values()) {
      for (const v of versions.values()) {
        await v.batcher.drained();
        v.dispose();
      }
    }
    this.models.clear();
  }
}

/**
 * Loads the run's newest committed round under `name` unless that version is
 * already served; resolves to the round loaded, or undefined when nothing changed.
 */
export async function loadNewestRound(registry: ModelRegistry, name: string, runDir: string): Promise<number | undefined> {
  const newest = newestCommittedModel(runDir);
  if (!newest) {
    if (!registry.newest(name)) throw new ServingLoadError(`${runDir} has no committed round yet`);
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

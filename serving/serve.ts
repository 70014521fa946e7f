// One serving process: models loaded into a registry, the REST API (and
// optionally gRPC) in front, sharing one admission control, and (optionally)
// runs followed so each newly committed round is served.
import { basename } from 'node:path';
import { Admission, type AdmissionOptions } from './load-shedding.js';
import type { BatcherOptions } from './batcher.js';
import { startGrpcServing, type GrpcServing, type GrpcServingOptions } from './grpc.js';
import { startHttpServing, type HttpServing, type HttpServingOptions } from './http.js';
import { ServingMetrics } from './metrics.js';
import { followRun, loadNewestRound, ModelRegistry, newestCommittedModel } from './registry.js';

/** What to serve under one name: a checkpoint directory, or a run's newest committed round. */
export type ModelSource = { name: string; checkpoint: string } | { name: string; run: string };

export interface ServeOptions {
  sources: readonly ModelSource[];
  batching: BatcherOptions;
  admission: AdmissionOptions;
  http: HttpServingOptions;
  /** Also serve TF Serving's gRPC PredictionService/ModelService. */
  grpc?: GrpcServingOptions;
  keepVersions: number;
  /** Poll runs for newly committed rounds this often; undefined serves what was committed at start. */
  followIntervalMs?: number;
  log: (msg: string) => void;
}

export interface Serving {
  port: number;
  /** Set when gRPC was asked for. */
  grpcPort?: number;
  registry: ModelRegistry;
  metrics: ServingMetrics;
  admission: Admission;
  close(): Promise<void>;
}

/** The version a bare checkpoint directory is served as: its round (round-0042 → 42), else 1. */
export function checkpointVersion(dir: string): number {
  const match = /^round-(\d+)$/.exec(basename(dir.replace(/\/+$/, '')));
  return match ? Number(match[1]) : 1;
}

/**
 * Listens first, then loads: while a model loads, status requests see it
 * LOADING and predict requests get a clear 503/UNAVAILABLE instead of a refused connection.
 */
export async function startServing(options: ServeOptions): Promise<Serving> {
  const metrics = new ServingMetrics();
  const registry = new ModelRegistry({ batching: options.batching, keepVersions: options.keepVersions }, metrics);
  const admission = new Admission(options.admission);
  metrics.watchAdmission(() => ({ pending: admission.pending, expectedDelayMs: admission.expectedDelayMs() }));
  const stopFollowing: (() => void)[] = [];
  let http: HttpServing | undefined;
  let grpc: GrpcServing | undefined;
  const close = async (): Promise<void> => {
    for (const stop of stopFollowing) stop();
    await http?.close();
    await grpc?.close();
    admission.close();
    await registry.close();
  };
  try {
    http = await startHttpServing(registry, metrics, admission, options.http);
    if (options.grpc) grpc = await startGrpcServing(registry, metrics, admission, options.grpc);
    await Promise.all(
      options.sources.map(async (source) => {
        if ('checkpoint' in source) {
          const version = checkpointVersion(source.checkpoint);
          await registry.load(source.name, version, source.checkpoint);
          options.log(`serving ${source.name} version ${version} from ${source.checkpoint}`);
        } else {
          const following = options.followIntervalMs !== undefined;
          if (following && !newestCommittedModel(source.run)) {
            // Started beside a run that has not committed yet: answer 503 until its first round, then serve it.
            registry.expect(source.name);
            options.log(`${source.name}: waiting for the first committed round of ${source.run}`);
          } else {
            const round = await loadNewestRound(registry, source.name, source.run);
            options.log(`serving ${source.name} version ${round} from ${source.run}`);
          }
          if (following) stopFollowing.push(followRun(registry, source.name, source.run, options.followIntervalMs!, options.log));
        }
      }),
    );
    return { port: http.port, grpcPort: grpc?.port, registry, metrics, admission, close };
  } catch (err) {
    await close();
    throw err;
  }
}

// One serving process: models loaded into a registry, the HTTP API in front,
// and (optionally) runs followed so each newly committed round is served.
import { basename } from 'node:path';
import type { BatcherOptions } from './batcher.js';
import { startHttpServing, type HttpServingOptions } from './http.js';
import { ServingMetrics } from './metrics.js';
import { followRun, loadNewestRound, ModelRegistry } from './registry.js';

/** What to serve under one name: a checkpoint directory, or a run's newest committed round. */
export type ModelSource = { name: string; checkpoint: string } | { name: string; run: string };

export interface ServeOptions {
  sources: readonly ModelSource[];
  batching: BatcherOptions;
  http: HttpServingOptions;
  keepVersions: number;
  /** Poll runs for newly committed rounds this often; undefined serves what was committed at start. */
  followIntervalMs?: number;
  log: (msg: string) => void;
}

export interface Serving {
  port: number;
  registry: ModelRegistry;
  metrics: ServingMetrics;
  close(): Promise<void>;
}

/** The version a bare checkpoint directory is served as: its round (round-0042 → 42), else 1. */
export function checkpointVersion(dir: string): number {
  const match = /^round-(\d+)$/.exec(basename(dir.replace(/\/+$/, '')));
  return match ? Number(match[1]) : 1;
}

export async function startServing(options: ServeOptions): Promise<Serving> {
  const metrics = new ServingMetrics();
  const registry = new ModelRegistry({ batching: options.batching, keepVersions: options.keepVersions }, metrics);
  const stopFollowing: (() => void)[] = [];
  try {
    for (const source of options.sources) {
      if ('checkpoint' in source) {
        const version = checkpointVersion(source.checkpoint);
        await registry.load(source.name, version, source.checkpoint);
        options.log(`serving ${source.name} version ${version} from ${source.checkpoint}`);
      } else {
        const round = await loadNewestRound(registry, source.name, source.run);
        options.log(`serving ${source.name} version ${round} from ${source.run}`);
        if (options.followIntervalMs !== undefined) stopFollowing.push(followRun(registry, source.name, source.run, options.followIntervalMs, options.log));
      }
    }
    const http = await startHttpServing(registry, metrics, options.http);
    return {
      port: http.port,
      registry,
      metrics,
      close: async () => {
        for (const stop of stopFollowing) stop();
        await http.close();
        await registry.close();
      },
    };
  } catch (err) {
    for (const stop of stopFollowing) stop();
    await registry.close();
    throw err;
  }
}

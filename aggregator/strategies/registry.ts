// Every strategy an experiment can name.
//
// To add a strategy: write strategies/<name>.ts exporting a StrategyDescriptor
// (./strategy.ts): its zod schema (a strict object whose `name` is the literal
// name, with defaults and .describe() texts), the engine that runs it, and
// create(), which usually builds a FedOpt (./fedopt.ts) with its options; then
// add it to STRATEGIES below. The experiment schema's `strategy`, strategyFor,
// the aggregator's choice of engine and rerun's notes all read it from here.
import { fedadagradStrategy, fedadamStrategy, fedyogiStrategy } from './adaptive.js';
import { fedavgStrategy } from './fedavg.js';
import { fedavgmStrategy } from './fedavgm.js';
import { fedbuffStrategy } from './fedbuff.js';
import { fedproxStrategy } from './fedprox.js';
import type { StrategyDescriptor, StrategySchema } from './strategy.js';

// The order is the order error messages list the names in.
export const STRATEGIES = [
  fedavgStrategy,
  fedproxStrategy,
  fedavgmStrategy,
  fedadagradStrategy,
  fedadamStrategy,
  fedyogiStrategy,
  fedbuffStrategy,
] as const;

type SchemasOf<T extends readonly StrategyDescriptor[]> = { -readonly [K in keyof T]: T[K] extends StrategyDescriptor<infer S extends StrategySchema> ? S : never };

/** Each registered strategy's schema, in order, typed one by one so their union infers every field. */
export function strategySchemas(): SchemasOf<typeof STRATEGIES> {
  return STRATEGIES.map((s) => s.schema) as SchemasOf<typeof STRATEGIES>;
}

const byName = new Map<string, StrategyDescriptor>(STRATEGIES.map((s) => [s.name, s]));

/** The registered strategy of this name (an experiment that parsed names one). */
export function strategyNamed(name: string): StrategyDescriptor {
  const descriptor = byName.get(name);
  if (!descriptor) throw new Error(`no strategy is registered as ${JSON.stringify(name)}; the registered are ${STRATEGIES.map((s) => s.name).join(', ')}`);
  return descriptor;
}

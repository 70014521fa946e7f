// What a strategy owns, and what it leaves to the round engine.
//
// A strategy owns what is asked of nodes (configureTraining) and how their
// updates become the next global model (aggregate); its descriptor (below)
// owns its experiment fields and which engine runs it. The engine owns the
// rest of the round lifecycle: selecting nodes, deadlines and quorum, checking
// and storing uploads, committing and checkpointing, and evaluating each new
// model, which is centralised on the aggregator's test set (aggregator.ts
// hands the engine an `evaluate` callback) rather than a strategy's choice.
// The math lives in ../robust and ./server-optimizers.ts as pure functions
// over Float32Arrays.
import type { z } from 'zod';
import type { AggregationSpec } from '../robust/rules.js';
import type { ReputationSpec, SelectionSpec, TrainingSpec } from '../experiment/sections.js';
import type { Verdict } from '../robust/verdict.js';
import type { ServerOptimizerState } from './server-optimizers.js';

/** What a round's tasks ask of nodes: the experiment's training, plus FedProx's μ (0 = plain local SGD). */
export interface RoundTraining extends TrainingSpec {
  proximal_mu: number;
}

export interface ReceivedUpdate {
  readonly nodeId: string;
  readonly taskId: string;
  readonly numExamples: number;
  /** The node's reputation when the update arrived (1 = every earlier update kept). */
  readonly reputation: number;
  /** trained − base weights, flat. */
  readonly delta: Float32Array;
  /** FedBuff: models published since the update's base model (absent for synchronous rounds). */
  readonly staleness?: number;
}

export interface StrategyHistory {
  /** The global model before `global` (the previous round's base); absent in round 1. */
  readonly previousGlobal?: Float32Array;
  /** The server optimizer's state after the previous round; absent before the first. */
  readonly serverState?: ServerOptimizerState;
}

export interface StrategyStep {
  readonly weights: Float32Array;
  readonly verdicts: readonly Verdict[];
  /** The server optimizer's state after this round, for the next (and for the checkpoint). */
  readonly serverState?: ServerOptimizerState;
}

export interface Strategy {
  readonly name: string;
  /** The training hyperparameters sent with this round's tasks. */
  configureTraining(round: number): RoundTraining;
  /**
   * The next global model from the current one and the round's updates. A
   * strategy keeps no state between calls: whatever it needs of the past comes
   * in `history` (which the engine restores on resume and replay rebuilds from
   * checkpoints), so a round's result depends only on its recorded inputs.
   */
  aggregate(global: Float32Array, updates: readonly ReceivedUpdate[], history: StrategyHistory): StrategyStep;
}

/**
 * The engine that runs a strategy: `synchronous` rounds (../rounds/synchronous.ts) select nodes and
 * wait for a quorum; `buffered` (../rounds/buffered.ts) hands out tasks continuously and publishes a
 * model every buffer.
 */
export type EngineKind = 'synchronous' | 'buffered';

/** The parts of the experiment a strategy reads when it is created (an Experiment is one). */
export interface StrategyContext {
  readonly training: TrainingSpec;
  /** Default: the example-weighted mean. */
  readonly aggregation?: AggregationSpec;
  readonly reputation?: Pick<ReputationSpec, 'weight_updates'>;
}

/** The parts of the experiment a strategy checks itself against (an Experiment is one). */
export interface StrategyCheckContext {
  readonly nodes: number;
  readonly selection: Pick<SelectionSpec, 'nodes_per_round' | 'min_updates'>;
}

/** How many updates one aggregation may have at the fewest, and which experiment field sets that. */
export interface SmallestAggregation {
  /** The field's path in the experiment, as error messages name it. */
  readonly field: string;
  readonly updates: number;
  /** What to tell the user to raise when a rule needs more. */
  readonly raise: string;
}

/** An experiment a strategy cannot run, said as the experiment schema reports it. */
export interface StrategyProblem {
  readonly message: string;
  /** Below `strategy`, e.g. ['buffer_size']. */
  readonly path: readonly string[];
}

/** A strategy's experiment fields: a strict zod object whose `name` is its literal name. */
export type StrategySchema = z.ZodObject<{ name: z.ZodLiteral<string> } & z.core.$ZodShape, z.core.$strict>;

/** One strategy, as the registry (./registry.ts) lists it. */
export interface StrategyDescriptor<Schema extends StrategySchema = StrategySchema> {
  readonly name: Schema['shape']['name']['value'];
  /** Its fields in an experiment's `strategy`, with their defaults and descriptions. */
  readonly schema: Schema;
  readonly engine: EngineKind;
  create(spec: z.output<Schema>, experiment: StrategyContext): Strategy;
  /** The fewest updates an aggregation gets; without this, the synchronous round's quorum (selection.min_updates). */
  smallestAggregation?(spec: z.output<Schema>): SmallestAggregation;
  /** Refuses, while the experiment file is parsed, what this strategy cannot run with the rest of it. */
  checkExperiment?(spec: z.output<Schema>, experiment: StrategyCheckContext): StrategyProblem | undefined;
}

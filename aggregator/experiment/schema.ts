// The one schema for experiment files. Every type the runner, aggregator and
// datasets use for an experiment is inferred from here.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { backendPreferenceSchema } from '../../core/backend.js';
import { modelNameSchema, zooModel } from '../../core/model/zoo.js';
import { datasetNamed, datasets } from '../../datasets/registry.js';
import { datasetSchema } from '../../datasets/spec.js';
import { aggregationSchema } from '../robust/rules.js';
import { attackSchema } from './attack-schema.js';
import { strategyNamed, strategySchemas } from '../strategies/registry.js';
import { describeIssues, UserError } from '../../core/user-error.js';
import { reputationSchema, selectionSchema, trainingSchema } from './sections.js';

export { reputationSchema, selectionSchema, trainingSchema, type ReputationSpec, type SelectionSpec, type TrainingSpec } from './sections.js';

// Strategies: one file each in ../strategies, listed in its registry; an experiment's `strategy` is one of theirs.
export const strategySchema = z.discriminatedUnion('name', strategySchemas());
export type StrategySpec = z.infer<typeof strategySchema>;

// Robust aggregation: which rule turns the round's updates into one, and the
// pre-filters every update passes first. Each rule's fields live beside its
// code; aggregator/robust/rules.ts lists the rules.
export { aggregationSchema, type AggregationRule, type AggregationSpec } from '../robust/rules.js';

export const MAX_EXPERIMENT_NAME_CHARS = 100;

export const experimentSchema = z
  .object({
    // A run's id, and so its directory's name, starts with the experiment's name: bounded well inside a file name's 255 bytes.
    name: z
      .string()
      .max(MAX_EXPERIMENT_NAME_CHARS, `at most ${MAX_EXPERIMENT_NAME_CHARS} characters: the name begins the run directory's name`)
      .regex(/^[a-z0-9][a-z0-9._-]*$/i, 'use letters, digits, ".", "_" or "-"'),
    description: z.string().optional(),
    seed: z.number().int().nonnegative().max(2 ** 31 - 1),
    dataset: datasetSchema,
    model: modelNameSchema,
    nodes: z.number().int().positive().max(10000).describe('how many nodes the simulation starts'),
    rounds: z.number().int().positive().max(100000),
    strategy: strategySchema.default({ name: 'fedavg' }),
    // prefault, not default: the omitted section is parsed, so the mean's safe defaults (norm check, claim cap) are filled in.
    aggregation: aggregationSchema.prefault({ rule: 'mean' }),
    attack: attackSchema.optional().describe('simulations only: a share of the nodes run this attack'),
    faults: z
      .object({
        vanish_probability: z
          .number()
          .min(0)
          .lt(1)
          .default(0)
          .describe('each task, a node vanishes mid-round with this probability (seeded) and rejoins after the deadline'),
        slow_fraction: z.number().min(0).max(1).default(0).describe('this share of the nodes (chosen by seed) are stragglers'),
        slowdown: z
          .number()
          .min(1)
          .max(100)
          .default(1)
          .describe('a straggler takes this many times as long per task as it would (it waits out the difference before uploading)'),
      })
      .strict()
      .optional()
      .describe('simulations only: injected node failures'),
    reputation: reputationSchema.default({ decay: 0.3, weight_updates: false, ban_after: 3 }),
    selection: selectionSchema,
    training: trainingSchema,
    backend: backendPreferenceSchema.default('auto'),
    record: z
      .object({
        update_tensors: z
          .boolean()
          .default(true)
          .describe("keep every aggregated update's bytes in the run directory (content-addressed), so `crowdfl replay` can re-run each aggregation"),
      })
      .strict()
      .default({ update_tensors: true }),
    target: z
      .object({ accuracy: z.number().min(0).max(1), within_rounds: z.number().int().positive() })
      .strict()
      .optional(),
  })
  .strict()
  .refine((e) => e.selection.nodes_per_round <= e.nodes, {
    message: 'selection.nodes_per_round cannot exceed nodes',
    path: ['selection', 'nodes_per_round'],
  })
  // What a strategy cannot run with the rest of the experiment (FedBuff: a buffer that could never fill).
  .superRefine((e, ctx) => {
    const problem = strategyNamed(e.strategy.name).checkExperiment?.(e.strategy, e);
    if (problem) ctx.addIssue({ code: 'custom', message: problem.message, path: ['strategy', ...problem.path] });
  })
  // Pairings the registries rule out: a model that convolves images needs a dataset with packaged images,
  // and generated data comes with its own ("natural") partition, which no other dataset has.
  .superRefine((e, ctx) => {
    if (zooModel(e.model)?.needsImages && !isImageDataset(e.dataset.name)) {
      const images = datasets.filter((d) => isImageDataset(d.name)).map((d) => d.name);
      ctx.addIssue({ code: 'custom', message: `the ${e.model} model needs 28x28 images (${images.join(' or ')}), not ${e.dataset.name} vectors`, path: ['model'] });
    }
  })
  .refine((e) => !isImageDataset(e.dataset.name) === (e.dataset.partition.kind === 'natural'), {
    message: 'the "natural" partition belongs to synthetic data only, and synthetic data has no other',
    path: ['dataset', 'partition', 'kind'],
  });

function isImageDataset(name: string): boolean {
  return datasetNamed(name)?.images !== undefined;
}
export type Experiment = z.infer<typeof experimentSchema>;
/** What an experiment file may omit (defaults fill it in). */
export type ExperimentInput = z.input<typeof experimentSchema>;

export class ExperimentError extends UserError {}

export function parseExperiment(value: unknown, source = 'experiment'): Experiment {
  const result = experimentSchema.safeParse(value);
  if (!result.success) {
    throw new ExperimentError(`${source} is not a valid experiment:\n${describeIssues(result.error)}`);
  }
  return result.data;
}

export function loadExperimentFile(path: string): { experiment: Experiment; text: string } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ExperimentError(
      code === 'ENOENT'
        ? `experiment file ${path} does not exist; pass the path of a JSON file such as experiments/default.json`
        : `cannot read experiment file ${path}: ${(err as Error).message}`,
    );
  }
  let json: unknown;
  try {
    // Editors on Windows save UTF-8 with a byte order mark, which JSON.parse refuses.
    json = JSON.parse(text.startsWith('\uFEFF') ? text.slice(1) : text);
  } catch (err) {
    throw new ExperimentError(`experiment file ${path} is not valid JSON: ${(err as Error).message}`);
  }
  return { experiment: parseExperiment(json, `experiment file ${path}`), text };
}

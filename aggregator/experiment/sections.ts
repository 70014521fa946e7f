// The experiment sections that depend on no registry: local training, reputation and selection.
// Kept apart from schema.ts, which composes the registries' sections too, so the strategies and the
// reputation rules can use these types without importing the registries that import them.
import { z } from 'zod';

export const trainingSchema = z
  .object({
    epochs: z.number().int().positive().max(1000),
    batch_size: z.number().int().positive().max(65536),
    learning_rate: z.number().positive().max(100),
  })
  .strict();
export type TrainingSpec = z.infer<typeof trainingSchema>;

// A node's reputation is a moving average of its verdicts (0 when a verdict
// holds evidence against its update, else 1; nodes/reputation.ts), kept in the
// node registry across rounds.
export const reputationSchema = z
  .object({
    decay: z
      .number()
      .gt(0)
      .max(1)
      .default(0.3)
      .describe('weight of the newest verdict in the moving average; 1 = only the last verdict counts'),
    min_for_selection: z
      .number()
      .min(0)
      .max(1)
      .optional()
      .describe('nodes whose reputation is below this are not selected'),
    weight_updates: z
      .boolean()
      .default(false)
      .describe('multiply example-count weights by reputation (mean and geometric-median only)'),
    ban_below: z.number().min(0).max(1).optional().describe('ban a node automatically once its reputation falls below this'),
    ban_after: z
      .number()
      .int()
      .positive()
      .default(3)
      .describe('how many verdicts a node must have before it can be banned automatically'),
  })
  .strict();
export type ReputationSpec = z.infer<typeof reputationSchema>;

export const selectionSchema = z
  .object({
    nodes_per_round: z.number().int().positive().describe('how many nodes are asked to train each round'),
    min_updates: z.number().int().positive().describe('quorum: fewer updates than this by the deadline abandons the round'),
    deadline_seconds: z.number().positive().max(86400),
    over_selection: z
      .number()
      .min(1)
      .max(10)
      .default(1)
      .describe(
        'ask ceil(nodes_per_round × this) nodes and commit as soon as nodes_per_round updates arrived, so nodes that drop or ' +
          'straggle do not hold the round (Bonawitz et al. 2019 use 1.3)',
      ),
  })
  .strict()
  .refine((s) => s.min_updates <= s.nodes_per_round, {
    message: 'min_updates cannot exceed nodes_per_round',
    path: ['min_updates'],
  });
export type SelectionSpec = z.infer<typeof selectionSchema>;

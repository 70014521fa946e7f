// Small, fast experiments for tests: synthetic data and logistic regression,
// so a round takes well under a second while every real part (gRPC, processes,
// database, checkpoints) is exercised.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseExperiment, type Experiment, type ExperimentInput } from '../../aggregator/experiment/schema.js';

export function tinyExperiment(overrides: Partial<ExperimentInput> = {}): Experiment {
  return parseExperiment({
    name: 'tiny',
    seed: 7,
    dataset: { name: 'synthetic', alpha: 0, beta: 0, dimensions: 60, classes: 10 },
    model: 'logreg',
    nodes: 3,
    rounds: 3,
    selection: { nodes_per_round: 3, min_updates: 2, deadline_seconds: 60 },
    training: { epochs: 2, batch_size: 16, learning_rate: 0.1 },
    backend: 'auto',
    ...overrides,
  });
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `crowdfl-${prefix}-`));
}

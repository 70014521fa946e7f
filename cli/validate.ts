import type { Command } from 'commander';
import { loadExperimentFile } from '../aggregator/experiment/schema.js';
import { action } from './errors.js';
import { strategyFor } from '../aggregator/strategies/index.js';

export function register(program: Command): void {
  program
    .command('validate')
    .description('check an experiment file against the schema and print it with defaults filled in')
    .argument('<experiment>', 'experiment file (JSON)')
    .action(
      action((file: string) => {
        const { experiment } = loadExperimentFile(file);
        strategyFor(experiment); // refuses rules whose preconditions the quorum cannot meet
        process.stdout.write(`${JSON.stringify(experiment, null, 2)}\n`);
      }),
    );
}

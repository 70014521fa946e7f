import type { Command } from 'commander';
import { loadExperimentFile } from '../aggregator/experiment/schema.js';
import { printSummary } from './summary.js';
import { action } from './errors.js';
import { runOptions } from './options.js';

export function register(program: Command): void {
  runOptions(
    program
      .command('simulate')
      .description('run an experiment on this machine: the aggregator and one process per node, over gRPC on loopback')
      .argument('<experiment>', 'experiment file (JSON), e.g. experiments/default.json'),
    {
      runsDir: 'where runs/<run-id>/ is written',
      runId: 'name of the run directory (default: <experiment>-<time>-<random>)',
      backend: "override the experiment's backend",
    },
  )
    .addHelpText(
      'after',
      '\nWrites runs/<run-id>/summary.json (per-round accuracy, loss, participants, seconds, model_sha256),\n' +
        'checkpoints/round-NNNN/{model.json,weights.bin}, crowdfl.db (rounds, updates, nodes) and each node\'s log.',
    )
    .action(
      action(async (file: string, opts: { runsDir: string; runId?: string; backend?: 'auto'; progress: boolean }) => {
        const { experiment, text } = loadExperimentFile(file);
        // Loaded on use: the simulator reaches the attack code, which the rest of the binary never loads.
        const { simulate } = await import('../lab/simulate.js');
        const summary = await simulate({
          experiment,
          experimentText: text,
          runsDir: opts.runsDir,
          runId: opts.runId,
          backend: opts.backend,
          progress: opts.progress,
        });
        printSummary(summary, summary.run_dir);
      }),
    );
}

import type { Command } from 'commander';
import { DEFAULT_CROSS_BACKEND_TOLERANCE, type BackendPreference } from '../core/backend.js';
import { action } from './errors.js';
import { parsePoints, runOptions } from './options.js';
import { resolveRun } from './runs.js';

export function register(program: Command): void {
  runOptions(
    program
      .command('rerun')
      .description("run a recorded experiment again with its seed and the original nodes' keys, then compare the accuracy of every round")
      .argument('<run>', 'run directory, or its name under --runs-dir'),
    {
      runsDir: 'where runs named without a path are',
      runId: "name of the new run's directory, beside the original (default: <experiment>-rerun-<time>-<random>)",
      backend: "compute on this backend instead of the original's",
    },
  )
    .option(
      '--tolerance <points>',
      `accuracy difference in percentage points still counted as agreeing when the backends differ (default ${DEFAULT_CROSS_BACKEND_TOLERANCE * 100})`,
      parsePoints,
    )
    .addHelpText(
      'after',
      '\nThe experiment comes from the run\'s crowdfl.db (what the aggregator ran), the nodes take the\n' +
        'original nodes\' keys from RUN/nodes/node-NNN/state/key.json (a node\'s id picks its training seeds),\n' +
        'and the backend is the one the original computed on unless --backend says otherwise. Prints a table\n' +
        'of every round (original and rerun accuracy, difference, whether the models are bit-identical),\n' +
        'writes rerun-accuracy.svg with both runs into the new run directory, and exits 0 when every round\'s\n' +
        'accuracy is the original\'s, 1 naming the first round that differs. On another backend accuracies\n' +
        'are compared within --tolerance, since only the same backend is promised identical results.\n' +
        'What is and is not reproducible: README.md, "Determinism".',
    )
    .action(
      action(async (run: string, opts: { runsDir: string; runId?: string; backend?: BackendPreference; tolerance?: number; progress: boolean }) => {
        // Loaded on use: a rerun runs the simulator, which reaches the attack code the rest of the binary never loads.
        const { describeRerun, rerun } = await import('../lab/rerun.js');
        const result = await rerun({
          runDir: resolveRun(opts.runsDir, run),
          runId: opts.runId,
          backend: opts.backend,
          tolerance: opts.tolerance,
          progress: opts.progress,
        });
        process.stdout.write(`\n${describeRerun(result)}`);
        if (!result.agrees) process.exitCode = 1;
      }),
    );
}

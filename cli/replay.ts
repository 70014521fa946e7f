import type { Command } from 'commander';
import { backendPreferenceSchema, type BackendPreference } from '../core/backend.js';
import { formatReplay, replayRun } from '../lab/replay.js';
import { action } from './errors.js';
import { parseChoice } from './options.js';
import { resolveRun } from './runs.js';

export function register(program: Command): void {
  program
    .command('replay')
    .description("verify a finished run from its directory alone: every signature and hash, every round's aggregation re-run, every accuracy re-measured")
    .argument('<run>', 'a run directory, or a run id under --runs-dir')
    .option('--runs-dir <dir>', 'where runs live', 'runs')
    .option('--backend <name>', "evaluate on this backend instead of the run's own (accuracies then compare within 0.1 point)", parseChoice(backendPreferenceSchema))
    .option('--no-progress', 'print no progress bar')
    .addHelpText(
      'after',
      '\nExits 0 when everything checks out, 1 on any mismatch (each named with its round and cause), 2 on a usage error.\n' +
        'Needs only the run directory (crowdfl.db, checkpoints/, updates/) and the dataset packages, so a copied run replays offline.',
    )
    .action(
      action(async (run: string, opts: { runsDir: string; backend?: BackendPreference; progress: boolean }) => {
        const result = await replayRun({ runDir: resolveRun(opts.runsDir, run), backend: opts.backend, progress: opts.progress });
        process.stdout.write(formatReplay(result));
        process.exitCode = result.ok ? 0 : 1;
      }),
    );
}

import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { loadRuns, writeReport } from '../lab/report.js';
import { newRunId } from '../aggregator/run-id.js';
import { action } from './errors.js';

/**
 * RUN is a directory or a name under --runs-dir, as for `runs show`: the first of the two that holds
 * crowdfl.db, else the first that exists, so that loading it names the directory that is not a run.
 */
function runDirectory(runsDir: string, run: string): string {
  const candidates = [run, join(runsDir, run)];
  return candidates.find((dir) => existsSync(join(dir, 'crowdfl.db'))) ?? candidates.find((dir) => existsSync(dir)) ?? run;
}

export function register(program: Command): void {
  program
    .command('report')
    .description('a markdown report with SVG charts comparing runs: accuracy, loss, participants and rejections, time per round')
    .argument('<runs...>', 'run directories, or their names under --runs-dir')
    .option('--runs-dir <dir>', 'where runs named without a path are', 'runs')
    .option('--out <dir>', 'where report.md and the charts are written (default: report-<time>-<random> beside the first run)')
    .addHelpText(
      'after',
      '\nWrites report.md (per run: experiment, aggregation rule, nodes, rounds, final and best accuracy, time,\n' +
        'abandoned attempts, rejections by reason, a per-round table) and accuracy.svg, loss.svg,\n' +
        'participation.svg, time.svg, each with every run on it. Read from each run\'s crowdfl.db, so a\n' +
        'running or interrupted run can be reported too. The default --out for runs/a and runs/b is\n' +
        'runs/report-<time>-<random>, next to the runs it compares.',
    )
    .action(
      action(async (runs: string[], opts: { runsDir: string; out?: string }) => {
        const dirs = runs.map((run) => runDirectory(opts.runsDir, run));
        const loaded = loadRuns(dirs);
        const outDir = opts.out ?? join(dirname(resolve(dirs[0]!)), newRunId('report'));
        const written = await writeReport(loaded, outDir);
        process.stdout.write(`report on ${loaded.length} run(s) written to ${outDir}\n${written.map((path) => `  ${path}\n`).join('')}`);
      }),
    );
}

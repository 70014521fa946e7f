import { writeFileSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { startAggregator } from '../aggregator/aggregator.js';
import { backendPreferenceSchema, loadExperimentFile, type BackendPreference } from '../core/experiment.js';
import { federatedData } from '../datasets/index.js';
import { newRunId } from '../experiments/simulate.js';
import { RunProgress } from '../experiments/progress.js';
import { writeRunPlot } from '../experiments/plot.js';
import { action } from './errors.js';
import { parseChoice, parsePort } from './options.js';
import { printSummary } from './summary.js';

interface Options {
  experiment: string;
  host: string;
  port: number;
  runsDir: string;
  runId?: string;
  backend?: BackendPreference;
}

export function register(program: Command): void {
  program
    .command('aggregator')
    .description('serve an experiment: wait for nodes, run its rounds, checkpoint every global model')
    .requiredOption('--experiment <file>', 'experiment file (JSON)')
    .option('--host <host>', 'address to listen on (0.0.0.0 for every interface)', '127.0.0.1')
    .option('--port <port>', 'port to listen on (0 picks a free one)', parsePort, 7070)
    .option('--runs-dir <dir>', 'where runs/<run-id>/ is written', 'runs')
    .option('--run-id <id>', 'name of the run directory')
    .option('--backend <name>', 'tfjs backend for evaluation: auto|tensorflow|tensorflow-gpu|wasm|cpu', parseChoice(backendPreferenceSchema))
    .addHelpText('after', '\nNodes join with: crowdfl node --aggregator HOST:PORT --data DIR')
    .action(
      action(async (opts: Options) => {
        const { experiment: parsed, text } = loadExperimentFile(opts.experiment);
        const experiment = opts.backend ? { ...parsed, backend: opts.backend } : parsed;
        const runId = opts.runId ?? newRunId(experiment.name);
        const runDir = resolve(opts.runsDir, runId);
        mkdirSync(runDir, { recursive: true });
        writeFileSync(join(runDir, 'experiment.json'), text);
        const log = (msg: string) => process.stderr.write(`${msg}\n`);
        const { test } = await federatedData(experiment.dataset, experiment.nodes, experiment.seed, { log });
        const progress = new RunProgress(experiment.rounds);
        const running = await startAggregator({
          experiment,
          runDir,
          runId,
          test,
          host: opts.host,
          port: opts.port,
          log,
          onEvent: progress.handle,
        });
        process.once('SIGINT', () => {
          log('interrupted: closing the aggregator (committed rounds are kept)');
          void running.stop();
        });
        const summary = await running.done;
        progress.close();
        if (summary.rounds.length) await writeRunPlot(summary, runDir);
        printSummary(summary, runDir);
      }),
    );
}

import { join } from 'node:path';
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { loadExperimentFile } from '../aggregator/experiment/schema.js';
import { federatedData } from '../datasets/index.js';
import { importCsv, readLocalData, writeLocalData } from '../datasets/local-dir.js';
import type { Dataset } from '../core/dataset.js';
import { action } from './errors.js';

function parseShape(value: string): number[] {
  const dims = value.split(',').map(Number);
  if (dims.some((d) => !Number.isInteger(d) || d <= 0)) throw new InvalidArgumentError('expected positive integers separated by commas, e.g. 28,28,1');
  return dims;
}

function parseCount(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 2 || n > 256) throw new InvalidArgumentError('expected a whole number from 2 to 256');
  return n;
}

function describe(ds: Dataset): string {
  const counts = new Array<number>(ds.numClasses).fill(0);
  for (const l of ds.labels) counts[l]!++;
  return `${ds.numExamples} examples, features [${ds.featureShape.join(',')}], ${ds.numClasses} classes; per class: ${counts.join(' ')}`;
}

export function register(program: Command): void {
  const data = program.command('data').description('prepare, import and inspect local training data');

  data
    .command('prepare')
    .description("write the experiment's per-node partitions as crowdfl-data directories (what `simulate` feeds its nodes)")
    .requiredOption('--experiment <file>', 'experiment file (JSON)')
    .requiredOption('--out <dir>', 'output directory; node-000/, node-001/, … are created inside')
    .action(
      action(async (opts: { experiment: string; out: string }) => {
        const { experiment } = loadExperimentFile(opts.experiment);
        const log = (msg: string) => process.stderr.write(`${msg}\n`);
        const { partitions } = await federatedData(experiment.dataset, experiment.nodes, experiment.seed, { log });
        partitions.forEach((p, i) => {
          const dir = join(opts.out, `node-${String(i).padStart(3, '0')}`);
          writeLocalData(dir, p);
          process.stdout.write(`${dir}: ${describe(p)}\n`);
        });
      }),
    );

  data
    .command('import-csv')
    .description('convert a CSV (label first, then the features; an optional header line) into a crowdfl-data directory')
    .argument('<csv>', 'the CSV file')
    .requiredOption('--out <dir>', 'the crowdfl-data directory to write')
    .option('--feature-shape <dims>', 'shape of one example, e.g. 28,28,1 (default: a flat vector)', parseShape)
    .option('--classes <n>', 'number of classes (default: largest label + 1)', parseCount)
    .action(
      action((csv: string, opts: { out: string; featureShape?: number[]; classes?: number }) => {
        const ds = importCsv(csv, { featureShape: opts.featureShape, numClasses: opts.classes });
        writeLocalData(opts.out, ds);
        process.stdout.write(`${opts.out}: ${describe(ds)}\n`);
      }),
    );

  data
    .command('inspect')
    .description('check a crowdfl-data directory and print what it holds')
    .argument('<dir>', 'the directory')
    .action(
      action((dir: string) => {
        process.stdout.write(`${dir}: ${describe(readLocalData(dir))}\n`);
      }),
    );
}

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { loadExperimentFile } from '../aggregator/experiment/schema.js';
import { federatedData } from '../datasets/index.js';
import { importCsv, readLocalData, writeLocalData } from '../datasets/local-dir.js';
import type { Dataset } from '../core/dataset.js';
import { describeRange, DEFAULT_EXPECTED_RANGE, featureRange, rangeWarning } from '../datasets/feature-range.js';
import { action, UsageError } from './errors.js';

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

/** A scale factor: a number, or a fraction such as 1/255. */
function parseScale(value: string): number {
  const m = /^\s*([0-9.eE+-]+)\s*(?:\/\s*([0-9.eE+-]+))?\s*$/.exec(value);
  const n = m ? Number(m[1]) / (m[2] === undefined ? 1 : Number(m[2])) : Number.NaN;
  if (!Number.isFinite(n) || n === 0) throw new InvalidArgumentError('expected a non-zero number or a fraction, e.g. 0.5 or 1/255');
  return n;
}

function parseRange(value: string): [number, number] {
  const [lo, hi, ...rest] = value.split(',').map(Number);
  if (rest.length || !Number.isFinite(lo) || !Number.isFinite(hi) || !(lo! < hi!)) throw new InvalidArgumentError('expected LO,HI with LO < HI, e.g. 0,1 or -1,1');
  return [lo!, hi!];
}

/** Prints the data's feature range, and a warning on stderr when it is not what the models expect. */
function reportRange(ds: Dataset, expected: readonly [number, number]): string {
  const r = featureRange(ds, expected);
  const warning = rangeWarning(r, expected);
  if (warning) process.stderr.write(`crowdfl: ${warning}\n`);
  return describeRange(r);
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
    .option('--scale <factor>', 'multiply every feature by this, e.g. 1/255 for 0..255 pixels (default 1)', parseScale)
    .option('--expect-range <lo,hi>', `the feature range the model expects; values outside it are warned about (default ${DEFAULT_EXPECTED_RANGE.join(',')})`, parseRange)
    .option('--force', 'overwrite --out if it exists')
    .action(
      action((csv: string, opts: { out: string; featureShape?: number[]; classes?: number; scale?: number; expectRange?: [number, number]; force?: boolean }) => {
        if (existsSync(opts.out) && !opts.force) {
          throw new UsageError(`${opts.out} already exists; choose another --out, or pass --force to overwrite it`);
        }
        const imported = importCsv(csv, { featureShape: opts.featureShape, numClasses: opts.classes });
        const ds = opts.scale === undefined || opts.scale === 1 ? imported : { ...imported, features: imported.features.map((v) => v * opts.scale!) };
        const range = reportRange(ds, opts.expectRange ?? DEFAULT_EXPECTED_RANGE);
        writeLocalData(opts.out, ds);
        process.stdout.write(`${opts.out}: ${describe(ds)}; ${range}\n`);
      }),
    );

  data
    .command('inspect')
    .description('check a crowdfl-data directory and print what it holds')
    .argument('<dir>', 'the directory')
    .option('--expect-range <lo,hi>', `the feature range the model expects (default ${DEFAULT_EXPECTED_RANGE.join(',')})`, parseRange)
    .action(
      action((dir: string, opts: { expectRange?: [number, number] }) => {
        const ds = readLocalData(dir);
        process.stdout.write(`${dir}: ${describe(ds)}; ${reportRange(ds, opts.expectRange ?? DEFAULT_EXPECTED_RANGE)}\n`);
      }),
    );
}

import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { backendPreferenceSchema, type BackendPreference } from '../core/experiment.js';
import { readLocalData } from '../datasets/local-dir.js';
import { runNode } from '../trainer/node.js';
import { action, UsageError } from './errors.js';
import { parseAddress, parseChoice } from './options.js';

interface Options {
  aggregator: string;
  data: string;
  backend: BackendPreference;
  nodeId?: string;
  stateDir: string;
  exitWhenFinished: boolean;
  quiet: boolean;
}

/** The node's id survives restarts, so the aggregator knows it is the same machine. */
function persistentNodeId(stateDir: string): string {
  const file = join(stateDir, 'node-id');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const id = `node-${randomBytes(8).toString('hex')}`;
  writeFileSync(file, `${id}\n`, { mode: 0o600 });
  return id;
}

export function register(program: Command): void {
  program
    .command('node')
    .description('contribute local training: join an aggregator and train on the data in --data')
    .requiredOption('--aggregator <host:port>', 'the aggregator to join', parseAddress)
    .requiredOption('--data <dir>', 'local training data (format: datasets/README.md; make one with `crowdfl data import-csv`)')
    .option('--backend <name>', 'auto|tensorflow|tensorflow-gpu|wasm|cpu', parseChoice(backendPreferenceSchema), 'auto')
    .option('--node-id <id>', 'identity to announce (default: one created once and kept in --state-dir)')
    .option('--state-dir <dir>', 'where the node keeps its identity', join(homedir(), '.crowdfl', 'node'))
    .option('--exit-when-finished', 'exit when the aggregator finishes its experiment, instead of waiting for the next', false)
    .option('--quiet', 'log only errors', false)
    .addHelpText(
      'after',
      '\nThe node never runs code it is sent: a task carries a declarative tfjs layers model (JSON), built\n' +
        'only from an allowlist of layer classes. It reconnects by itself if the aggregator goes away.',
    )
    .action(
      action(async (opts: Options) => {
        if (!existsSync(opts.data)) {
          throw new UsageError(`--data ${opts.data} does not exist; point it at a directory in the crowdfl-data format (see datasets/README.md)`);
        }
        const data = readLocalData(opts.data);
        const nodeId = opts.nodeId ?? persistentNodeId(opts.stateDir);
        const log = opts.quiet ? () => {} : (msg: string) => process.stderr.write(`[${nodeId}] ${msg}\n`);
        log(`${data.numExamples} local examples of shape [${data.featureShape.join(',')}], ${data.numClasses} classes`);
        const controller = new AbortController();
        const stop = () => {
          log('stopping');
          controller.abort();
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        const { tasksDone } = await runNode({
          aggregator: opts.aggregator,
          nodeId,
          data,
          backend: opts.backend,
          exitWhenFinished: opts.exitWhenFinished,
          log,
          signal: controller.signal,
        });
        log(`done: ${tasksDone} tasks`);
        process.exit(0);
      }),
    );
}

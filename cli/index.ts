#!/usr/bin/env node
// `crowdfl` — one file per subcommand, each thin: parse, then call the module that does the work.
import { Command, CommanderError } from 'commander';
import { CROWDFL_VERSION } from '../core/version.js';
import { register as registerAggregator } from './aggregator.js';
import { register as registerCerts } from './certs.js';
import { register as registerData } from './data.js';
import { register as registerKeys } from './keys.js';
import { register as registerNode } from './node.js';
import { register as registerNodes } from './nodes.js';
import { register as registerReport } from './report.js';
import { register as registerReplay } from './replay.js';
import { register as registerRerun } from './rerun.js';
import { register as registerServe } from './serve.js';
import { register as registerRuns } from './runs.js';
import { register as registerSimulate } from './simulate.js';
import { register as registerValidate } from './validate.js';

// `crowdfl runs show … | head`: the reader went away before we finished writing. That is not our
// error; stop quietly instead of dying with a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

// grpc-js sets the TLS server name to the aggregator's address even when that is an IP address, which
// Node warns about (DEP0123) on every connection. The certificate is still checked against the IP (its
// subjectAltName); only the warning, which says nothing a user can act on, is dropped.
const emitWarning = process.emitWarning.bind(process) as (...args: unknown[]) => void;
process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
  const code = typeof rest[0] === 'object' && rest[0] !== null ? (rest[0] as { code?: string }).code : rest[1];
  if (code !== 'DEP0123') emitWarning(warning, ...rest);
}) as typeof process.emitWarning;

const program = new Command();
program
  // Usage mistakes exit 2, as user errors in the actions do (cli/errors.ts): set before the
  // subcommands are added, so that they inherit it.
  .exitOverride()
  .name('crowdfl')
  .description('Federated learning on volunteer compute: a gRPC aggregator, TensorFlow.js trainer nodes.')
  .version(CROWDFL_VERSION)
  .showHelpAfterError('(run with --help for usage)')
  .addHelpText(
    'after',
    '\nExamples:\n' +
      '  crowdfl simulate experiments/default.json          # aggregator + 10 node processes on this machine\n' +
      '  crowdfl aggregator --experiment my.json --port 7070 # serve an experiment to real nodes\n' +
      '  crowdfl node --aggregator host:7070 --data ./mydata # contribute local training\n' +
      '  crowdfl runs show runs/<run-id> --updates           # every round and verdict of a run\n' +
      '  crowdfl report runs/<run-a> runs/<run-b>            # markdown report and charts comparing runs\n' +
      '  crowdfl rerun runs/<run-id>                         # run it again with its seed; compare every round\n' +
      '  crowdfl serve --run runs/<run-id> --follow          # answer predictions from the newest global model',
  );
registerSimulate(program);
registerAggregator(program);
registerNode(program);
registerData(program);
registerRuns(program);
registerReplay(program);
registerReport(program);
registerRerun(program);
registerNodes(program);
registerKeys(program);
registerCerts(program);
registerValidate(program);
registerServe(program);
// An unknown command is refused even with --help after it, which would otherwise print the top-level
// help and exit 0, so a script could not tell a missing command.
const commands = program.commands.flatMap((c) => [c.name(), ...c.aliases()]);
const first = process.argv.slice(2).find((a) => !a.startsWith('-'));
if (first !== undefined && first !== 'help' && !commands.includes(first)) {
  process.stderr.write(`crowdfl: unknown command '${first}'; the commands are ${commands.join(', ')} (run crowdfl --help for usage)\n`);
  process.exit(2);
}
try {
  await program.parseAsync(process.argv);
} catch (err) {
  // Commander has printed its message (or the help, or the version) already.
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  throw err;
}

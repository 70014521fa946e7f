#!/usr/bin/env node
// `crowdfl` — one file per subcommand, each thin: parse, then call the module that does the work.
import { Command } from 'commander';
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

const program = new Command();
program
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
await program.parseAsync(process.argv);

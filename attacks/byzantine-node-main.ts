#!/usr/bin/env node
// The Byzantine node of an attack simulation: `crowdfl node` itself, with the
// adversary hook filled from an attack file. `crowdfl simulate` starts this
// entry point instead of the CLI for the nodes it chose to be Byzantine:
//
//   node dist/attacks/byzantine-node-main.js --attack FILE node --aggregator … (the node's usual flags)
//
// The operator's binary (dist/cli/index.js) never imports this folder.
import { Command } from 'commander';
import { register as registerNode } from '../cli/node.js';
import { claimedExamples } from '../aggregator/experiment/attack-schema.js';
import { adversary, poisonData, readAttackFile } from './byzantine-node.js';

const argv = [...process.argv];
const at = argv.indexOf('--attack');
if (at < 0 || !argv[at + 1]) {
  process.stderr.write('usage: byzantine-node-main.js --attack FILE node --aggregator HOST:PORT --data DIR …\n');
  process.exit(2);
}
const file = readAttackFile(argv[at + 1]!);
argv.splice(at, 2);

const program = new Command().name('crowdfl-byzantine-node');
registerNode(program, {
  data: (data) => poisonData(file.attack, data),
  adversary: (nodeId, log) => adversary(file, nodeId, log),
  claimedExamples: claimedExamples(file.attack),
});
await program.parseAsync(argv);

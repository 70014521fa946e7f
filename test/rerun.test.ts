// `crowdfl rerun` on a real run: a tiny simulation run again from its database
// with its seed and its nodes' keys gives the same accuracy and the same model
// bits in every round; a recorded accuracy edited afterwards is caught and
// named by its round.
import { cpSync, existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { and, eq } from 'drizzle-orm';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { rounds } from '../aggregator/store/schema.js';
import { runCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';

const dir = tempDir('rerun');
const runsDir = join(dir, 'runs');

/** Per committed round: [round, accuracy, model hash], as the run's database has them. */
function committed(runId: string): [number, number | null, string][] {
  const { db, close } = openDatabase(join(runsDir, runId, 'crowdfl.db'));
  try {
    return new RunStore(db).committedRounds(runId).map((r) => [r.round, r.accuracy, r.modelSha256]);
  } finally {
    close();
  }
}

function nodeIds(runId: string): string[] {
  const { db, close } = openDatabase(join(runsDir, runId, 'crowdfl.db'));
  try {
    return new RunStore(db).nodeRows().map((n) => n.nodeId);
  } finally {
    close();
  }
}

test.before(async () => {
  // Three nodes of six asked per round: which three is up to the seeded selection, so the rerun must
  // see the same nodes connected when it selects, not just the same seed.
  const file = join(dir, 'tiny.json');
  writeFileSync(file, JSON.stringify(tinyExperiment({ nodes: 6, selection: { nodes_per_round: 3, min_updates: 3, deadline_seconds: 60 } })));
  const sim = await runCli(['simulate', file, '--runs-dir', runsDir, '--run-id', 'original', '--no-progress']);
  if (sim.code !== 0) throw new Error(`simulate failed: ${sim.stderr}`);
  // Copied before the test below edits the original.
  cpSync(join(runsDir, 'original'), join(dir, 'keyless', 'original'), { recursive: true });
  rmSync(join(dir, 'keyless', 'original', 'nodes', 'node-001', 'state', 'key.json'));
  // As a run served to nodes on other machines looks: no nodes/ directory.
  cpSync(join(runsDir, 'original'), join(dir, 'served', 'original'), { recursive: true });
  rmSync(join(dir, 'served', 'original', 'nodes'), { recursive: true });
});

test.serial('a rerun repeats every round of the original to the bit, and an edited accuracy is named by its round', async (t) => {
  const same = await runCli(['rerun', 'original', '--runs-dir', runsDir, '--run-id', 'again']);
  t.is(same.code, 0, same.stderr + same.stdout);
  t.deepEqual(committed('again'), committed('original'));
  t.deepEqual(nodeIds('again'), nodeIds('original'), "the rerun's nodes joined under the original nodes' ids");
  t.regex(same.stdout, /^identical: all 3 rounds have the original's accuracy; model hashes match in every round too$/m);
  for (const round of [1, 2, 3]) t.regex(same.stdout, new RegExp(`^\\s+${round}\\s+(\\S+)\\s+\\1\\s+0\\s+yes$`, 'm'), `round ${round}'s row`);
  // Progress with an ETA went to stderr while it trained.
  t.regex(same.stderr, /round {3}3\/3 .* ETA 0s/);
  t.true(existsSync(join(runsDir, 'again', 'rerun-accuracy.svg')));

  // An evaluator's copy whose round 2 was edited: the rerun says round 2 differs and exits 1.
  const { db, close } = openDatabase(join(runsDir, 'original', 'crowdfl.db'));
  const [, recorded] = committed('original')[1]!;
  const edited = recorded! >= 0.5 ? recorded! - 0.25 : recorded! + 0.25;
  db.update(rounds).set({ accuracy: edited }).where(and(eq(rounds.runId, 'original'), eq(rounds.round, 2), eq(rounds.status, 'committed'))).run();
  close();
  const tampered = await runCli(['rerun', join(runsDir, 'original'), '--no-progress']);
  t.is(tampered.code, 1, tampered.stderr + tampered.stdout);
  t.regex(
    tampered.stdout,
    new RegExp(`^differs: round 2 is the first whose accuracy is not the original's \\(original ${(edited * 100).toFixed(2)}%, rerun ${(recorded! * 100).toFixed(2)}%\\); 1 of 3 rounds differ$`, 'm'),
  );
  t.regex(tampered.stdout, /^\s+2\s+\S+\s+\S+\s+[+-]25\.00\s+yes {2}DIFFERS$/m, 'the model is still the same: only the recorded accuracy was edited');
});

test('a missing run, or one whose node keys are gone, is a clear error, exit 2, with nothing written', async (t) => {
  const [missing, keyless] = await Promise.all([runCli(['rerun', join(dir, 'absent')]), runCli(['rerun', 'original', '--runs-dir', join(dir, 'keyless')])]);
  t.is(missing.code, 2);
  t.is(missing.stderr, `crowdfl: no run ${join(dir, 'absent')}: expected a directory holding crowdfl.db (see \`crowdfl runs list\`)\n`);
  t.is(keyless.code, 2);
  const key = join(dir, 'keyless', 'original', 'nodes', 'node-001', 'state', 'key.json');
  t.is(
    keyless.stderr,
    `crowdfl: ${join(dir, 'keyless', 'original')} has no key for node-001 (${key}); ` +
      "a rerun needs the original nodes' keys, since a node's id picks its training seeds\n",
  );
  t.deepEqual(readdirSync(join(dir, 'keyless')), ['original']);
  const served = await runCli(['rerun', 'original', '--runs-dir', join(dir, 'served')]);
  t.is(served.code, 2);
  t.regex(served.stderr, /was not simulated here: it has no nodes\/ directory.*to check this run, use `crowdfl replay` on it/);
  t.deepEqual(readdirSync(join(dir, 'served')), ['original']);
});

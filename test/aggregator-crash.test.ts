// kill -9 the aggregator mid-run and start it again with the same command:
// it resumes from the last committed round with that round's model, the
// nodes carry on by themselves, and no round is lost or committed twice.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { auditRun } from '../aggregator/audit.js';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { federatedData } from '../datasets/index.js';
import { writeLocalData } from '../datasets/local-dir.js';
import { freePort, runCli, spawnCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';

const until = async (what: string, check: () => boolean, timeoutMs = 90_000) => {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

test('an aggregator killed with SIGKILL resumes from its last committed round when started again', async (t) => {
  const experiment = tinyExperiment({ nodes: 3, rounds: 6, selection: { nodes_per_round: 3, min_updates: 3, deadline_seconds: 30 } });
  const dir = tempDir('crash');
  const file = join(dir, 'tiny.json');
  writeFileSync(file, JSON.stringify(experiment));
  const data = await federatedData(experiment.dataset, 3, experiment.seed);
  data.partitions.forEach((p, i) => writeLocalData(join(dir, `data-${i}`), p));
  const port = await freePort();
  const aggregatorArgs = ['aggregator', '--experiment', file, '--run-id', 'r', '--runs-dir', dir, '--port', String(port), '--key', join(dir, 'agg-key.json')];
  const nodes = [0, 1, 2].map((i) =>
    spawnCli(['node', '--aggregator', `127.0.0.1:${port}`, '--data', join(dir, `data-${i}`), '--state-dir', join(dir, `state-${i}`), '--exit-when-finished']),
  );
  const committed = () => {
    try {
      const { db, close } = openDatabase(join(dir, 'r', 'crowdfl.db'));
      try {
        return new RunStore(db).committedRounds('r').length;
      } finally {
        close();
      }
    } catch {
      return 0;
    }
  };
  try {
    // Kill it twice: once right after a commit, once at an arbitrary moment of a round.
    let agg = spawnCli(aggregatorArgs);
    await until('round 2 to commit', () => committed() >= 2);
    agg.kill('SIGKILL');
    await new Promise((r) => agg.once('exit', r));
    const afterFirstKill = committed();

    agg = spawnCli(aggregatorArgs);
    await until('the restarted aggregator to resume', () => /resuming run r at round \d+/.test(agg.output()));
    await until('another round to commit', () => committed() > afterFirstKill);
    await new Promise((r) => setTimeout(r, 150));
    agg.kill('SIGKILL');
    await new Promise((r) => agg.once('exit', r));

    agg = spawnCli(aggregatorArgs);
    const exit = await new Promise<number | null>((r) => agg.once('exit', r));
    t.is(exit, 0, agg.output());
    t.regex(agg.output(), /resuming run r at round \d+ of 6/);
    t.regex(agg.output(), /rounds committed : 6\/6/);
    await Promise.all(nodes.map((n) => (n.exitCode !== null ? Promise.resolve() : new Promise((r) => n.once('exit', r)))));
    t.true(nodes.every((n) => n.exitCode === 0), 'nodes carried on through both kills and finished by themselves');

    const { db, close } = openDatabase(join(dir, 'r', 'crowdfl.db'));
    const store = new RunStore(db);
    const rounds = store.committedRounds('r');
    // Every round committed exactly once, and each one started from the model the one before committed.
    t.deepEqual(rounds.map((r) => r.round), [1, 2, 3, 4, 5, 6]);
    for (let i = 1; i < rounds.length; i++) t.is(rounds[i]!.previousModelSha256, rounds[i - 1]!.modelSha256, `round ${rounds[i]!.round}`);
    t.deepEqual(auditRun(store, 'r').flatMap((a) => a.problems), [], 'every signature and hash of the run checks out');
    t.is(store.getRun('r')!.status, 'finished');
    close();
    // Started again once finished, it refuses instead of training more.
    const again = await runCli(aggregatorArgs);
    t.is(again.code, 2);
    t.regex(again.stderr, /run r already finished; pass a new --run-id/);
  } finally {
    for (const n of nodes) if (n.exitCode === null) n.kill('SIGKILL');
  }
});

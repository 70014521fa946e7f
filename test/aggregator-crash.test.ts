// kill -9 the aggregator at random points of a 10-round run and start it again
// with the same command each time: it resumes from the last committed round,
// the nodes carry on by themselves, no round is lost or committed twice, and
// — since every node's update depends only on (round, node, base model) — the
// models it commits are bit-identical to those of a run that was never killed.
//
// Every run kills the aggregator at each injected crash point once, in a fixed
// order (so no run leaves the commit order untested), then at seeded random
// points, outside kills included. The seed picks the rounds and the later
// kills; a failure prints it, and CRASH_TEST_SEED=<seed> replays the same
// plan. CRASH_TEST_KILLS sets how many kills (the short form here uses one
// per crash point plus one; the bench's long form more).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { CRASH_POINTS } from '../aggregator/crash-points.js';
import { auditRun } from '../lab/audit.js';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { federatedData } from '../datasets/index.js';
import { writeLocalData } from '../datasets/local-dir.js';
import { Rng } from '../core/rng.js';
import { freePort, runCli, spawnCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';

const ROUNDS = 10;
const NODES = 3;

const until = async (what: string, check: () => boolean, timeoutMs = 90_000) => {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

const exited = (p: ReturnType<typeof spawnCli>) =>
  p.exitCode !== null || p.signalCode !== null
    ? Promise.resolve({ code: p.exitCode, signal: p.signalCode })
    : new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => p.once('exit', (code, signal) => r({ code, signal })));

/** The committed rounds of a run as [round, model hash] pairs, and its status, read from its database as an evaluator would. */
function readRun(runDir: string, runId: string): { models: [number, string][]; status: string | undefined } {
  try {
    const { db, close } = openDatabase(join(runDir, 'crowdfl.db'));
    try {
      const store = new RunStore(db);
      return { models: store.committedRounds(runId).map((r) => [r.round, r.modelSha256]), status: store.getRun(runId)?.status };
    } finally {
      close();
    }
  } catch {
    return { models: [], status: undefined };
  }
}
const committedModels = (runDir: string, runId: string) => readRun(runDir, runId).models;

test('an aggregator killed with SIGKILL at random points of 10 rounds loses no round, doubles none, and ends with the model of an unkilled run', async (t) => {
  const seed = Number(process.env.CRASH_TEST_SEED ?? Date.now() % 1_000_000);
  const kills = Number(process.env.CRASH_TEST_KILLS ?? CRASH_POINTS.length + 1);
  t.log(`kill plan seed ${seed} (replay with CRASH_TEST_SEED=${seed}), ${kills} kills`);
  const rng = new Rng(seed);

  const experiment = tinyExperiment({ nodes: NODES, rounds: ROUNDS, selection: { nodes_per_round: NODES, min_updates: NODES, deadline_seconds: 30 } });
  const dir = tempDir('crash');
  const file = join(dir, 'tiny.json');
  writeFileSync(file, JSON.stringify(experiment));
  const data = await federatedData(experiment.dataset, NODES, experiment.seed);
  data.partitions.forEach((p, i) => writeLocalData(join(dir, `data-${i}`), p));
  // Both runs use the same node keys (state dirs) and aggregator key, so the same nodes train the same tasks.
  const startRun = async (runId: string) => {
    const port = await freePort();
    // --linger: a node in reconnect backoff when the last aggregator finishes still hears that the run is over.
    const args = ['aggregator', '--experiment', file, '--run-id', runId, '--runs-dir', dir, '--port', String(port), '--key', join(dir, 'agg-key.json'), '--linger', '40'];
    const nodes = Array.from({ length: NODES }, (_, i) =>
      spawnCli(['node', '--aggregator', `127.0.0.1:${port}`, '--data', join(dir, `data-${i}`), '--state-dir', join(dir, `state-${i}`), '--exit-when-finished']),
    );
    return { args, nodes };
  };

  // The reference: the same run, never killed.
  const reference = await startRun('ref');
  try {
    const agg = spawnCli(reference.args);
    const { code } = await exited(agg);
    t.is(code, 0, agg.output());
  } finally {
    for (const n of reference.nodes) if (n.exitCode === null) n.kill('SIGKILL');
  }
  const referenceModels = committedModels(join(dir, 'ref'), 'ref');
  t.is(referenceModels.length, ROUNDS);

  const { args, nodes } = await startRun('k');
  const runDir = join(dir, 'k');
  const committed = () => committedModels(runDir, 'k').length;
  const survived: string[] = [];
  try {
    let seen: [number, string][] = [];
    // The output of the aggregator process that finished the run.
    let finisher: string | undefined;
    for (let k = 0; k < kills && committed() < ROUNDS - 1; k++) {
      const round = Math.min(ROUNDS, committed() + 1 + rng.int(2));
      // Four points the aggregator kills itself at (the moments an outside kill rarely hits), and a plain
      // outside kill. The first kills visit every injected point in order; later ones draw a point or an
      // outside kill (which lands whenever the machine lets it, possibly after the last round).
      const choice = k < CRASH_POINTS.length ? k : rng.int(CRASH_POINTS.length + 1);
      const point = CRASH_POINTS[choice];
      const agg = point
        ? spawnCli(args, { CROWDFL_CRASH_AT: `${point}:${round}` })
        : spawnCli(args);
      if (!point) {
        await until(`round ${round - 1} to commit`, () => committed() >= round - 1 || agg.exitCode !== null);
        await new Promise((r) => setTimeout(r, rng.int(800)));
        agg.kill('SIGKILL');
      }
      const { signal, code } = await exited(agg);
      if (signal !== 'SIGKILL') {
        // The run finished before the kill landed (possible only for an outside kill near the end).
        t.is(code, 0, agg.output());
        finisher = agg.output();
        break;
      }
      if (point) t.regex(agg.output(), new RegExp(`fault injection: SIGKILL at ${point} of round ${round}`));
      survived.push(`${point ?? 'outside kill'} in round ${round}`);
      // Nothing committed before a kill is lost or changed by it.
      const now = committedModels(runDir, 'k');
      t.deepEqual(now.slice(0, seen.length), seen, `after kill ${k + 1}`);
      seen = now;
    }

    // An outside kill can land after the run was marked finished (while the aggregator lets nodes hear it): nothing is left to run.
    if (finisher === undefined && readRun(runDir, 'k').status !== 'finished') {
      const agg = spawnCli(args);
      const { code } = await exited(agg);
      t.is(code, 0, agg.output());
      finisher = agg.output();
    }
    if (finisher !== undefined) {
      if (survived.length > 0) t.regex(finisher, new RegExp(`resuming run k at round \\d+ of ${ROUNDS}`));
      t.regex(finisher, new RegExp(`rounds committed : ${ROUNDS}/${ROUNDS}`));
    }
    t.log(`kills survived: ${survived.length} (${survived.join(', ')})`);
    t.true(survived.length >= Math.min(kills, CRASH_POINTS.length), 'the plan really killed the aggregator');
    // Each crash point was hit in this run, whatever the seed.
    for (const point of CRASH_POINTS.slice(0, kills)) t.true(survived.some((s) => s.startsWith(`${point} in round`)), `killed at ${point}`);
    const results = await Promise.all(nodes.map(exited));
    t.true(results.every((r) => r.code === 0), 'nodes carried on through every kill and finished by themselves');

    const { db, close } = openDatabase(join(runDir, 'crowdfl.db'));
    const store = new RunStore(db);
    const rounds = store.committedRounds('k');
    // Every round committed exactly once, each starting from the model the one before committed …
    t.deepEqual(rounds.map((r) => r.round), Array.from({ length: ROUNDS }, (_, i) => i + 1));
    for (let i = 1; i < rounds.length; i++) t.is(rounds[i]!.previousModelSha256, rounds[i - 1]!.modelSha256, `round ${rounds[i]!.round}`);
    // … and each round's model is bit-identical to the unkilled run's.
    t.deepEqual(rounds.map((r) => [r.round, r.modelSha256]), referenceModels, 'same models as the run without kills');
    t.deepEqual(auditRun(store, 'k').flatMap((a) => a.problems), [], 'every signature and hash of the run checks out');
    t.is(store.getRun('k')!.status, 'finished');
    close();
    // Started again once finished, it refuses instead of training more.
    const again = await runCli(args);
    t.is(again.code, 2);
    t.regex(again.stderr, /run k already finished; pass a new --run-id/);
  } finally {
    for (const n of nodes) if (n.exitCode === null) n.kill('SIGKILL');
  }
});

// Attacks end to end: Byzantine node processes send correctly signed but
// poisoned updates, the aggregator's rule rejects them and says why, the
// verdicts are stored, reputations fall, and the attacker is banned.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { openDatabase } from '../aggregator/store/db.js';
import { RunStore } from '../aggregator/store/run-store.js';
import { simulate } from '../lab/simulate.js';
import { runCli } from './support/cli.js';
import { tempDir, tinyExperiment } from './support/fixtures.js';

test('a scaling attacker is rejected by the norm pre-check every round, loses its reputation and is banned', async (t) => {
  const experiment = tinyExperiment({
    nodes: 5,
    rounds: 4,
    selection: { nodes_per_round: 5, min_updates: 3, deadline_seconds: 60 },
    aggregation: { rule: 'median', max_norm: 20 },
    attack: { kind: 'scaling', fraction: 0.2, factor: 1000 },
    reputation: { decay: 0.5, ban_below: 0.3, ban_after: 2 },
  });
  const runsDir = tempDir('byz');
  const summary = await simulate({ experiment, runsDir, runId: 'byz', progress: false, log: () => {} });
  t.is(summary.rounds.length, 4);
  t.truthy(summary.attack);
  const [attacker] = summary.attack!.byzantine_nodes;
  t.is(summary.attack!.byzantine_nodes.length, 1);

  const { db, close } = openDatabase(join(runsDir, 'byz', 'crowdfl.db'));
  const store = new RunStore(db);
  // Rounds 1 and 2: the attacker's update arrives and is rejected with the pre-check's reason.
  for (const round of [1, 2]) {
    const mine = store.updatesOfRound('byz', round).filter((u) => u.nodeId === attacker);
    t.is(mine.length, 1, `round ${round}`);
    t.is(mine[0]!.verdict, 'rejected');
    t.regex(mine[0]!.reason, /norm/);
    t.true(mine[0]!.score! > 20, 'the score stored is the norm that failed the check');
  }
  t.regex(summary.rounds[0]!.verdicts, /1 of 5 rejected/);
  // After two rejections (0.5, then 0.25 < 0.3) it is banned and gets no more tasks.
  const node = store.node(attacker!)!;
  t.is(node.status, 'banned');
  t.regex(node.statusReason, /reputation 0\.250 fell below 0\.3 after 2 verdicts/);
  for (const round of [3, 4]) t.is(store.updatesOfRound('byz', round).filter((u) => u.nodeId === attacker).length, 0);
  t.is(summary.rounds[3]!.participants, 4);
  // Honest nodes kept their standing.
  for (const n of store.nodeRows().filter((r) => r.nodeId !== attacker)) {
    t.is(n.status, 'active');
    t.true(n.reputation > 0.5, `${n.nodeId} reputation ${n.reputation}`);
  }
  close();
  t.deepEqual(summary.attack!.detection.byzantine, { updates: 2, rejected: 2, down_weighted: 0, not_selected: 0, flagged: 2 });
  t.is(summary.attack!.detection.honest.rejected, 0);
  // The attacker's own log says what it did; the run says who attacked.
  const attackFile = JSON.parse(readFileSync(join(runsDir, 'byz', 'attack.json'), 'utf8'));
  t.deepEqual(attackFile.byzantine_nodes, [attacker]);
  const show = await runCli(['runs', 'show', 'byz', '--runs-dir', runsDir]);
  t.is(show.code, 0, show.stderr);
  t.regex(show.stdout, /verdicts: 1 of 5 rejected \(L2 norm\)/);
});

test('colluding ALIE attackers send the same crafted update; the copies are evidence, stored, and get them banned', async (t) => {
  const experiment = tinyExperiment({
    nodes: 5,
    rounds: 3,
    selection: { nodes_per_round: 5, min_updates: 3, deadline_seconds: 60 },
    aggregation: { rule: 'trimmed-mean', beta: 0.2 },
    attack: { kind: 'alie', fraction: 0.4, z: 1 },
    reputation: { decay: 0.5, ban_below: 0.3, ban_after: 2 },
  });
  const runsDir = tempDir('alie');
  const summary = await simulate({ experiment, runsDir, runId: 'alie', progress: false, log: () => {} });
  t.is(summary.rounds.length, 3);
  const attackers = summary.attack!.byzantine_nodes;
  t.is(attackers.length, 2);
  const { db, close } = openDatabase(join(runsDir, 'alie', 'crowdfl.db'));
  const store = new RunStore(db);
  for (const round of [1, 2]) {
    const updates = store.updatesOfRound('alie', round);
    const theirs = updates.filter((u) => attackers.includes(u.nodeId));
    t.is(theirs.length, 2);
    // Both computed mean − z·std over the same two honest updates: identical bytes.
    t.is(theirs[0]!.updateSha256, theirs[1]!.updateSha256, `round ${round}`);
    // The trimmed mean uses them (they sit inside the honest spread); the copy is the evidence.
    for (const u of theirs) t.regex(u.evidence ?? '', /^identical to 1 other update of this round/, `round ${round}`);
    for (const u of updates.filter((x) => !attackers.includes(x.nodeId))) t.is(u.evidence, null, `round ${round}: honest ${u.nodeId}`);
  }
  t.regex(summary.rounds[0]!.verdicts, /2 used but flagged \(identical\)/);
  // Two verdicts with evidence (0.5, then 0.25 < 0.3): both banned, so round 3 has the honest three only.
  for (const id of attackers) t.is(store.node(id)!.status, 'banned', id);
  t.is(store.updatesOfRound('alie', 3).length, 3);
  for (const n of store.nodeRows().filter((r) => !attackers.includes(r.nodeId))) t.is(n.reputation, 1, n.nodeId);
  close();
  t.like(summary.attack!.detection.byzantine, { updates: 4, flagged: 4, rejected: 0 });
  t.like(summary.attack!.detection.honest, { updates: 9, flagged: 0 });
});

test('what Multi-Krum leaves out without evidence is not selected, and costs its node no reputation', async (t) => {
  const experiment = tinyExperiment({
    nodes: 5,
    rounds: 3,
    selection: { nodes_per_round: 5, min_updates: 5, deadline_seconds: 60 },
    aggregation: { rule: 'multi-krum', f: 1, m: 2 },
    reputation: { decay: 0.5, ban_below: 0.3, ban_after: 2 },
  });
  const runsDir = tempDir('mkrum');
  const summary = await simulate({ experiment, runsDir, runId: 'mkrum', progress: false, log: () => {} });
  t.is(summary.rounds.length, 3);
  const { db, close } = openDatabase(join(runsDir, 'mkrum', 'crowdfl.db'));
  const store = new RunStore(db);
  for (const round of [1, 2, 3]) {
    const updates = store.updatesOfRound('mkrum', round);
    t.is(updates.filter((u) => u.verdict === 'kept').length, 2, `round ${round}`);
    t.is(updates.filter((u) => u.verdict === 'not-selected').length, 3, `round ${round}`);
    t.true(updates.every((u) => u.evidence === null), `round ${round}`);
    t.is(summary.rounds[round - 1]!.not_selected, 3);
    t.is(summary.rounds[round - 1]!.rejected, 0);
  }
  for (const n of store.nodeRows()) {
    t.is(n.status, 'active', n.nodeId);
    t.is(n.reputation, 1, n.nodeId);
  }
  close();
});

test('a node claiming 1e9 examples under the default rule is counted at the cap, and the run ends as a clean one does', async (t) => {
  // MNIST's 2,000 held-out digits: one point of accuracy is 20 of them, finer than run-to-run noise.
  const base = {
    dataset: { name: 'mnist', partition: { kind: 'iid' } },
    model: 'logreg',
    training: { epochs: 1, batch_size: 32, learning_rate: 0.1 },
    nodes: 4,
    rounds: 5,
    selection: { nodes_per_round: 4, min_updates: 4, deadline_seconds: 60 },
  } as const;
  const runsDir = tempDir('inflation');
  const clean = await simulate({ experiment: tinyExperiment(base), runsDir, runId: 'clean', progress: false, log: () => {} });
  const attacked = await simulate({
    experiment: tinyExperiment({ ...base, attack: { kind: 'example-inflation', fraction: 0.25 } }),
    runsDir,
    runId: 'inflated',
    progress: false,
    log: () => {},
  });
  const [liar] = attacked.attack!.byzantine_nodes;
  const { db, close } = openDatabase(join(runsDir, 'inflated', 'crowdfl.db'));
  try {
    const store = new RunStore(db);
    for (let round = 1; round <= base.rounds; round++) {
      const updates = store.updatesOfRound('inflated', round);
      const mine = updates.find((u) => u.nodeId === liar)!;
      const others = updates.filter((u) => u.nodeId !== liar);
      t.is(mine.numExamples, 1e9, 'the claim is what the node signed');
      t.is(mine.verdict, 'kept', 'capped, which is no evidence against the node');
      t.regex(mine.reason ?? '', /^weight capped from 0\.999 to 0\.\d+: claimed 1\.00e\+9 examples, the round's median claim is [\d,.]+ \(counted as [\d,.]+, max_examples_ratio 2\)/);
      // Counted at twice the round's median claim: at most 2 / (2 + 3 × its share of the smallest honest claim).
      const smallest = Math.min(...others.map((u) => u.numExamples));
      const median = [...updates.map((u) => u.numExamples)].sort((a, b) => a - b).slice(1, 3).reduce((a, b) => a + b) / 2;
      t.true(mine.weight <= (2 * median) / (2 * median + 3 * smallest) + 1e-9, `weight ${mine.weight}`);
      t.true(others.every((u) => u.verdict === 'kept'));
    }
  } finally {
    close();
  }
  const final = (s: typeof clean) => s.rounds.at(-1)!.accuracy;
  t.log(`final accuracy: clean ${final(clean)}, with the inflated claim ${final(attacked)}`);
  t.true(Math.abs(final(attacked) - final(clean)) <= 0.01, `clean ${final(clean)}, attacked ${final(attacked)}`);
});

import test from 'ava';
import { Rng } from '../../core/rng.js';
import { reputationChanges, type NodeStanding } from '../nodes/reputation.js';
import { tinyExperiment } from '../../test/support/fixtures.js';
import { EVIDENCE_OFF, findEvidence, NEAR_DUPLICATE_MAX_UPDATES } from './evidence.js';
import { aggregate, aggregationSchema, hasEvidence } from './index.js';

const D = 2000;

/** `n` honest updates: one shared direction plus each node's own noise, as honest training gives. */
function honestRound(n: number, seed: number): Float32Array[] {
  const rng = new Rng(seed);
  const common = Float32Array.from({ length: D }, () => rng.normal(0, 1));
  return Array.from({ length: n }, () => Float32Array.from(common, (x) => x + rng.normal(0, 0.5)));
}

const DEFAULTS = { outlier_distance_ratio: 2, duplicate_distance_ratio: 0.1 };
const mean = (us: readonly Float32Array[]) => Float32Array.from(us[0]!, (_, j) => us.reduce((a, u) => a + u[j]!, 0) / us.length);
const flagged = (found: readonly (string | undefined)[]) => found.flatMap((e, i) => (e === undefined ? [] : [i]));

test('no honest update of a round is evidence', (t) => {
  for (const seed of [1, 2, 3]) {
    const us = honestRound(20, seed);
    t.deepEqual(flagged(findEvidence(us, mean(us), DEFAULTS)), [], `seed ${seed}`);
  }
});

test('identical updates from different nodes are flagged as copies, each of them, and only they', (t) => {
  const us = honestRound(16, 4);
  const crafted = Float32Array.from(mean(us), (x) => x * 0.9);
  const round = [...us, crafted, Float32Array.from(crafted), Float32Array.from(crafted), Float32Array.from(crafted)];
  const found = findEvidence(round, mean(round), DEFAULTS);
  t.deepEqual(flagged(found), [16, 17, 18, 19]);
  t.regex(found[16]!, /^identical to 3 other updates of this round \(nearest at distance 0, the round's median pairwise distance is .*\): copied or colluding$/);
});

test('near-identical copies are flagged below the ratio and not above it', (t) => {
  const us = honestRound(16, 5);
  const rng = new Rng(9);
  const crafted = mean(us);
  const jittered = (sigma: number) => Array.from({ length: 4 }, () => Float32Array.from(crafted, (x) => x + rng.normal(0, sigma)));
  // Honest pairwise distances are about 0.5·√(2D) ≈ 31.6; jitter σ gives distances ≈ σ·√(2D).
  const close = [...us, ...jittered(0.01)];
  t.deepEqual(flagged(findEvidence(close, mean(close), DEFAULTS)), [16, 17, 18, 19]);
  t.regex(findEvidence(close, mean(close), DEFAULTS)[16]!, /^nearly identical to 3 other updates/);
  const apart = [...us, ...jittered(0.2)];
  t.deepEqual(flagged(findEvidence(apart, mean(apart), DEFAULTS)), [], 'copies as far apart as 0.4× the honest spread are not copies');
});

test('an update far from the aggregate is flagged with its distance ratio', (t) => {
  const us = honestRound(19, 6);
  const far = Float32Array.from(mean(us), (x) => -4 * x);
  const round = [...us, far];
  const found = findEvidence(round, mean(us), DEFAULTS);
  t.deepEqual(flagged(found), [19]);
  t.regex(found[19]!, /^its distance to the aggregate, [\d.]+, is [\d.]+× the round's median distance [\d.]+ \(outlier_distance_ratio 2\)$/);
});

test('null turns each check off, and fewer than 4 updates are never evidence', (t) => {
  const us = honestRound(8, 7);
  const round = [...us, Float32Array.from(us[0]!), Float32Array.from(mean(us), (x) => -10 * x)];
  t.deepEqual(flagged(findEvidence(round, mean(us), DEFAULTS)), [0, 8, 9]);
  t.deepEqual(flagged(findEvidence(round, mean(us), { ...DEFAULTS, duplicate_distance_ratio: null })), [9]);
  t.deepEqual(flagged(findEvidence(round, mean(us), { ...DEFAULTS, outlier_distance_ratio: null })), [0, 8]);
  t.deepEqual(flagged(findEvidence(round, mean(us), EVIDENCE_OFF)), []);
  const three = [us[0]!, Float32Array.from(us[0]!), Float32Array.from(us[0]!, (x) => 100 * x)];
  t.deepEqual(flagged(findEvidence(three, us[0]!, DEFAULTS)), []);
});

test('above the pairwise bound, byte-identical copies are still found', (t) => {
  const n = NEAR_DUPLICATE_MAX_UPDATES + 2;
  const us = Array.from({ length: n }, (_, i) => Float32Array.from({ length: 8 }, (_, j) => Math.sin(i * 8 + j)));
  us[n - 1] = Float32Array.from(us[3]!);
  const found = findEvidence(us, mean(us), { outlier_distance_ratio: null, duplicate_distance_ratio: 0.1 });
  t.deepEqual(flagged(found), [3, n - 1]);
  t.regex(found[3]!, /^identical to 1 other update of this round \(byte for byte/);
});

// The outside run's finding: Multi-Krum (f = 4, m = 15) and Bulyan (f = 4) leave out 5 and 8 honest
// updates every round with no attacker; that must not count against anyone.
for (const aggregation of [
  { rule: 'multi-krum', f: 4, m: 15 },
  { rule: 'bulyan', f: 4 },
  { rule: 'median' },
  { rule: 'trimmed-mean', beta: 0.2 },
] as const) {
  test(`${aggregation.rule} without an attacker: what it leaves out is not selected, not evidence, and over 20 rounds with bans on no node is banned`, (t) => {
    const spec = aggregationSchema.parse(aggregation);
    const reputation = tinyExperiment({ reputation: { decay: 0.3, ban_below: 0.5, ban_after: 3 } }).reputation;
    const standing = new Map<string, NodeStanding>();
    let notSelected = 0;
    for (let round = 1; round <= 20; round++) {
      const us = honestRound(20, 100 + round);
      const { verdicts } = aggregate(spec, us, us.map(() => 600));
      t.false(verdicts.some((v) => v.verdict === 'rejected'), `round ${round}: ${verdicts.map((v) => v.evidence).join(' | ')}`);
      notSelected += verdicts.filter((v) => v.verdict === 'not-selected').length;
      const changes = reputationChanges(
        reputation,
        (id) => standing.get(id) ?? { reputation: 1, verdicts: 0 },
        verdicts.map((v, i) => ({ nodeId: `n-${i}`, evidence: hasEvidence(v) })),
      );
      for (const c of changes) {
        t.is(c.ban, undefined, `round ${round}: ${c.nodeId}`);
        standing.set(c.nodeId, c);
      }
    }
    if (aggregation.rule === 'multi-krum') t.is(notSelected, 20 * 5);
    if (aggregation.rule === 'bulyan') t.is(notSelected, 20 * 8);
  });
}

test('colluders sending one crafted vector are rejected under Multi-Krum and flagged under the median, and reputation bans them, not the honest', (t) => {
  const reputation = tinyExperiment({ reputation: { decay: 0.3, ban_below: 0.5, ban_after: 3 } }).reputation;
  for (const aggregation of [{ rule: 'multi-krum', f: 4, m: 15 }, { rule: 'median' }] as const) {
    const spec = aggregationSchema.parse(aggregation);
    const standing = new Map<string, NodeStanding>();
    const banned = new Set<string>();
    for (let round = 1; round <= 5; round++) {
      const us = honestRound(16, 200 + round);
      // ALIE-like: just below the honest mean, the same vector from all four.
      const crafted = Float32Array.from(mean(us), (x) => x - 0.1);
      const all = [...us, ...Array.from({ length: 4 }, () => Float32Array.from(crafted))];
      const { verdicts } = aggregate(spec, all, all.map(() => 600));
      for (let i = 16; i < 20; i++) t.true(hasEvidence(verdicts[i]!), `${aggregation.rule} round ${round}: colluder ${i} ${verdicts[i]!.verdict}`);
      for (let i = 0; i < 16; i++) t.false(hasEvidence(verdicts[i]!), `${aggregation.rule} round ${round}: honest ${i}`);
      const changes = reputationChanges(
        reputation,
        (id) => standing.get(id) ?? { reputation: 1, verdicts: 0 },
        verdicts.map((v, i) => ({ nodeId: `n-${i}`, evidence: hasEvidence(v) })),
      );
      for (const c of changes) {
        standing.set(c.nodeId, c);
        if (c.ban) banned.add(c.nodeId);
      }
    }
    t.deepEqual([...banned].sort(), ['n-16', 'n-17', 'n-18', 'n-19'], aggregation.rule);
  }
});

test('reject_flagged aggregates again without the flagged updates, and says so when too few would be left', (t) => {
  const us = honestRound(16, 300);
  const crafted = Float32Array.from(mean(us), (x) => x - 0.1);
  const all = [...us, ...Array.from({ length: 4 }, () => Float32Array.from(crafted))];
  const r = aggregate(aggregationSchema.parse({ rule: 'mean', reject_flagged: true }), all, all.map(() => 600));
  const honestMean = mean(us);
  t.true(r.aggregate.every((x, j) => Math.abs(x - honestMean[j]!) < 1e-5), 'the aggregate is the honest updates\' mean');
  for (let i = 16; i < 20; i++) {
    t.like(r.verdicts[i], { verdict: 'rejected', weight: 0 });
    t.regex(r.verdicts[i]!.reason, /^left out of the second aggregation \(reject_flagged\); first: weighted by examples/);
  }
  for (let i = 0; i < 16; i++) t.like(r.verdicts[i], { verdict: 'kept', weight: 1 / 16 });
  const off = aggregate(aggregationSchema.parse({ rule: 'mean' }), all, all.map(() => 600));
  t.true(off.verdicts.slice(16).every((v) => v.verdict === 'kept' && v.weight === 1 / 20 && v.evidence !== undefined), 'without it the mean keeps the copies, flagged');
  // Krum with f = 1 needs more than 4 updates: 2 honest ones and 4 copies leave too few to aggregate again.
  const few = [...honestRound(2, 301), ...Array.from({ length: 4 }, () => Float32Array.from(crafted))];
  const fallback = aggregate(aggregationSchema.parse({ rule: 'krum', f: 1, reject_flagged: true }), few, few.map(() => 600));
  t.regex(fallback.verdicts[0]!.reason, /reject_flagged not applied: /);
  t.true(fallback.verdicts.slice(2).every((v) => v.evidence !== undefined));
});

test('reject_flagged counts the updates set aside among the f a rule tolerates, so Multi-Krum can aggregate again', (t) => {
  // IPM-like colluders: 4 copies of one crafted update among 16 honest ones. With the copies set aside,
  // m = 15 of 16 left would break m ≤ n − f for f = 4; counted as 4 of the f, f is 0 and it holds.
  const us = honestRound(16, 302);
  const crafted = Float32Array.from(mean(us), (x) => -0.5 * x);
  const all = [...us, ...Array.from({ length: 4 }, () => Float32Array.from(crafted))];
  const spec = aggregationSchema.parse({ rule: 'multi-krum', f: 4, m: 15, reject_flagged: true });
  const r = aggregate(spec, all, all.map(() => 600));
  for (let i = 16; i < 20; i++) t.like(r.verdicts[i], { verdict: 'rejected', weight: 0 });
  t.is(r.verdicts.slice(0, 16).filter((v) => v.weight > 0).length, 15, 'm = 15 of the 16 honest updates are averaged');
  t.regex(r.verdicts[0]!.reason, /second aggregation \(f 4 → 0: the 4 set aside count among the Byzantine updates the rule tolerates\)/);
  t.false(r.verdicts.some((v) => v.reason.includes('not applied')));
  // Set aside beyond f, m shrinks to what is left: 6 honest + 4 copies, f = 2, m = 8 → f 0, m 6.
  const small = [...us.slice(0, 6), ...Array.from({ length: 4 }, () => Float32Array.from(crafted))];
  const s2 = aggregate(aggregationSchema.parse({ rule: 'multi-krum', f: 2, m: 8, reject_flagged: true }), small, small.map(() => 600));
  t.is(s2.verdicts.slice(0, 6).filter((v) => v.weight > 0).length, 6);
  t.regex(s2.verdicts[0]!.reason, /f 2 → 0, m 8 → 6/);
});

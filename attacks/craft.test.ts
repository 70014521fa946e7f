import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { Rng } from '../core/rng.js';
import { alieZMax, craftUpdate, flipLabel, flipLabels, halvingSearch, inverseNormalCdf } from './craft.js';
import { awaitColluders, shareHonestUpdate } from './collusion.js';
import { attackSchema, needsCollusion, poisonsData, type AttackSpec } from '../aggregator/experiment/attack-schema.js';
import { parseExperiment } from '../aggregator/experiment/schema.js';

const run = promisify(execFile);
const ctx = { n: 20, f: 4 };
const attack = (value: unknown): AttackSpec => attackSchema.parse(value);

function close(t: { true(v: boolean, m?: string): void }, actual: ArrayLike<number>, expected: readonly number[], tol: number): void {
  t.true(actual.length === expected.length, `length ${actual.length} ≠ ${expected.length}`);
  for (let i = 0; i < expected.length; i++) {
    t.true(Math.abs(actual[i] - expected[i]) <= tol, `[${i}] ${actual[i]} ≠ ${expected[i]} ± ${tol}`);
  }
}

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'crowdfl-collusion-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// --- schema -----------------------------------------------------------------

test('schema fills the literature defaults', (t) => {
  t.deepEqual(attack({ kind: 'sign-flip', fraction: 0.2 }), { kind: 'sign-flip', fraction: 0.2, scale: 1 });
  t.deepEqual(attack({ kind: 'gaussian-noise', fraction: 0.2 }), { kind: 'gaussian-noise', fraction: 0.2, sigma: 1 });
  t.deepEqual(attack({ kind: 'scaling', fraction: 0.1 }), { kind: 'scaling', fraction: 0.1, factor: 10 });
  t.deepEqual(attack({ kind: 'ipm', fraction: 0.3 }), { kind: 'ipm', fraction: 0.3, epsilon: 0.5 });
  t.deepEqual(attack({ kind: 'alie', fraction: 0.2 }), { kind: 'alie', fraction: 0.2 });
  t.deepEqual(attack({ kind: 'alie', fraction: 0.2, z: 1.5 }), { kind: 'alie', fraction: 0.2, z: 1.5 });
  t.deepEqual(attack({ kind: 'label-flip', fraction: 0 }), { kind: 'label-flip', fraction: 0 });
  t.deepEqual(attack({ kind: 'free-ride', fraction: 0.5 }), { kind: 'free-ride', fraction: 0.5 });
});

test('schema refuses a bad fraction with a clear message, and unknown kinds and keys', (t) => {
  const message = (value: unknown): string => {
    const r = attackSchema.safeParse(value);
    t.false(r.success);
    return r.success ? '' : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('\n');
  };
  t.regex(message({ kind: 'sign-flip', fraction: 1 }), /^fraction: .*below 1/);
  t.regex(message({ kind: 'ipm', fraction: 1.5 }), /^fraction: .*0 ≤ fraction < 1/);
  t.regex(message({ kind: 'alie', fraction: -0.1 }), /^fraction: .*cannot be negative/);
  t.regex(message({ kind: 'scaling' }), /^fraction: .*share of nodes/);
  t.regex(message({ kind: 'scaling', fraction: '0.2' }), /^fraction: /);
  t.regex(message({ kind: 'backdoor', fraction: 0.1 }), /^kind: /);
  t.regex(message({ kind: 'sign-flip', fraction: 0.1, sigma: 2 }), /sigma/);
  t.regex(message({ kind: 'gaussian-noise', fraction: 0.1, sigma: 0 }), /^sigma: /);
});

test('needsCollusion is true for alie, ipm, min-max and min-sum only; poisonsData for label-flip only', (t) => {
  const kinds = ['sign-flip', 'gaussian-noise', 'scaling', 'label-flip', 'alie', 'ipm', 'min-max', 'min-sum', 'free-ride', 'example-inflation'];
  t.deepEqual(
    kinds.filter((kind) => needsCollusion(attack({ kind, fraction: 0.1 }))),
    ['alie', 'ipm', 'min-max', 'min-sum'],
  );
  t.deepEqual(
    kinds.filter((kind) => poisonsData(attack({ kind, fraction: 0.1 }))),
    ['label-flip'],
  );
});

// --- simple update attacks ----------------------------------------------------

test('sign flip sends −scale·delta and leaves the honest update alone', (t) => {
  const honest = new Float32Array([1, -2, 0.5, 3]);
  t.deepEqual(craftUpdate(attack({ kind: 'sign-flip', fraction: 0.2 }), honest, ctx), {
    delta: new Float32Array([-1, 2, -0.5, -3]),
  });
  t.deepEqual(craftUpdate(attack({ kind: 'sign-flip', fraction: 0.2, scale: 2 }), honest, ctx).delta, new Float32Array([-2, 4, -1, -6]));
  t.deepEqual(honest, new Float32Array([1, -2, 0.5, 3]));
});

test('scaling (model replacement) sends factor·delta, 10 by default', (t) => {
  const honest = new Float32Array([0.5, -0.25, 2]);
  t.deepEqual(craftUpdate(attack({ kind: 'scaling', fraction: 0.1 }), honest, ctx).delta, new Float32Array([5, -2.5, 20]));
  t.deepEqual(craftUpdate(attack({ kind: 'scaling', fraction: 0.1, factor: 4 }), honest, ctx).delta, new Float32Array([2, -1, 8]));
});

test('free ride sends a zero delta of the right length', (t) => {
  const honest = new Float32Array([0.5, -0.25, 2, 7]);
  const { delta, note } = craftUpdate(attack({ kind: 'free-ride', fraction: 0.3 }), honest, ctx);
  t.deepEqual(delta, new Float32Array(4));
  t.is(note, undefined);
  t.deepEqual(honest, new Float32Array([0.5, -0.25, 2, 7]));
});

test('label-flip leaves the (already poisoned) update as it is, as a copy', (t) => {
  const honest = new Float32Array([0.5, -0.25]);
  const { delta } = craftUpdate(attack({ kind: 'label-flip', fraction: 0.3 }), honest, ctx);
  t.deepEqual(delta, honest);
  t.not(delta, honest);
});

test('gaussian noise: same seed same update, std ≈ σ, mean ≈ 0, independent of the honest values', (t) => {
  const spec = attack({ kind: 'gaussian-noise', fraction: 0.2, sigma: 3 });
  const honest = new Float32Array(20_000).fill(100);
  const a = craftUpdate(spec, honest, { ...ctx, rng: new Rng(7) }).delta;
  const b = craftUpdate(spec, new Float32Array(20_000), { ...ctx, rng: new Rng(7) }).delta;
  const c = craftUpdate(spec, honest, { ...ctx, rng: new Rng(8) }).delta;
  t.deepEqual(a, b);
  t.notDeepEqual(a, c);
  let sum = 0;
  for (const x of a) sum += x;
  const mean = sum / a.length;
  let sq = 0;
  for (const x of a) sq += (x - mean) ** 2;
  const std = Math.sqrt(sq / (a.length - 1));
  // Standard error of the sample std is σ/√(2n) ≈ 0.015; allow ~5 of them.
  t.true(Math.abs(std - 3) < 0.075, `std ${std}`);
  t.true(Math.abs(mean) < 0.1, `mean ${mean}`);
  t.throws(() => craftUpdate(spec, honest, ctx), { message: /ctx\.rng/ });
});

test('label flip maps y to classes − 1 − y', (t) => {
  t.deepEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((y) => flipLabel(y, 10)), [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
  t.is(flipLabel(0, 2), 1);
  t.is(flipLabel(1, 2), 0);
  t.is(flipLabel(1, 3), 1);
  t.deepEqual(flipLabels(new Uint8Array([0, 3, 9]), 10), new Uint8Array([9, 6, 0]));
  t.throws(() => flipLabel(10, 10), { instanceOf: RangeError });
  t.throws(() => flipLabel(-1, 10), { instanceOf: RangeError });
  t.throws(() => flipLabel(0, 1), { instanceOf: RangeError });
});

// --- ALIE and IPM -------------------------------------------------------------

test('inverse normal CDF matches known quantiles', (t) => {
  // Reference values: bisection on Φ(x) = ½·erfc(−x/√2) in float64.
  const known: Array<[number, number]> = [
    [0.975, 1.9599639845400532],
    [0.025, -1.9599639845400545],
    [0.5, 0],
    [0.65, 0.38532046640756756],
    [0.7, 0.5244005127080404],
    [0.8413447460685429, 1],
    [0.99, 2.326347874040839],
    [0.01, -2.3263478740408416],
    [0.999, 3.090232306167797],
    [1e-10, -6.3613409024040575],
  ];
  for (const [p, x] of known) {
    t.true(Math.abs(inverseNormalCdf(p) - x) < 1e-6 * Math.max(1, Math.abs(x)), `Φ⁻¹(${p}) = ${inverseNormalCdf(p)}, want ${x}`);
  }
  t.true(Math.abs(inverseNormalCdf(0.975) - 1.959964) < 1e-6);
  t.is(inverseNormalCdf(0), -Infinity);
  t.is(inverseNormalCdf(1), Infinity);
  t.throws(() => inverseNormalCdf(1.1), { instanceOf: RangeError });
  t.throws(() => inverseNormalCdf(Number.NaN), { instanceOf: RangeError });
});

test('ALIE z_max for n = 20, f = 4', (t) => {
  // s = ⌊20/2 + 1⌋ − 4 = 7; (n − s)/n = 13/20 = 0.65; Φ⁻¹(0.65) = 0.38532046640756756.
  t.true(Math.abs(alieZMax(20, 4) - 0.38532046640756756) < 1e-8, `${alieZMax(20, 4)}`);
  // n = 50, f = 12: s = 26 − 12 = 14; (50 − 14)/50 = 0.72; Φ⁻¹(0.72) = 0.582841507271216.
  t.true(Math.abs(alieZMax(50, 12) - 0.582841507271216) < 1e-8, `${alieZMax(50, 12)}`);
  // f = 11 of 20: s = 0, the attackers already are a majority.
  t.throws(() => alieZMax(20, 11), { message: /majority/ });
  // n = 2, f = 0: s = 2, (n − s)/n = 0.
  t.throws(() => alieZMax(2, 0), { message: /too few/ });
  t.throws(() => alieZMax(20, 21), { instanceOf: RangeError });
  t.throws(() => alieZMax(0, 0), { instanceOf: RangeError });
});

// Three colluders' honest updates. Per coordinate:
//   [1, 3, 2]  mean 2, sample variance (1 + 1 + 0)/2 = 1, std 1
//   [2, 2, 5]  mean 3, sample variance (1 + 1 + 4)/2 = 3, std √3
//   [3, −1, 1] mean 1, sample variance (4 + 4 + 0)/2 = 4, std 2
const colluders = [new Float32Array([1, 2, 3]), new Float32Array([3, 2, -1]), new Float32Array([2, 5, 1])];

test('ALIE sends mean − z·std of the colluders\' honest updates', (t) => {
  const honest = colluders[0];
  const given = craftUpdate(attack({ kind: 'alie', fraction: 0.2, z: 1 }), honest, { ...ctx, colluders });
  close(t, given.delta, [2 - 1, 3 - Math.sqrt(3), 1 - 2], 1e-6);
  t.is(given.note, undefined);
  // z omitted: z_max(20, 4) = 0.38532046640756756.
  const zMax = 0.38532046640756756;
  const derived = craftUpdate(attack({ kind: 'alie', fraction: 0.2 }), honest, { ...ctx, colluders });
  close(t, derived.delta, [2 - zMax, 3 - zMax * Math.sqrt(3), 1 - 2 * zMax], 1e-6);
  close(t, derived.delta, [1.6146795335924324, 2.332605374985956, 0.22935906718486487], 1e-6);
  t.deepEqual(colluders[0], new Float32Array([1, 2, 3]));
});

test('IPM sends −ε·mean of the colluders\' honest updates, ε = 0.5 by default', (t) => {
  const honest = colluders[1];
  t.deepEqual(craftUpdate(attack({ kind: 'ipm', fraction: 0.2 }), honest, { ...ctx, colluders }), {
    delta: new Float32Array([-1, -1.5, -0.5]),
  });
  t.deepEqual(
    craftUpdate(attack({ kind: 'ipm', fraction: 0.2, epsilon: 2 }), honest, { ...ctx, colluders }).delta,
    new Float32Array([-4, -6, -2]),
  );
});

test('collusion attacks without colluders fall back to the own update and say so', (t) => {
  const honest = new Float32Array([1, -2, 4]);
  for (const c of [undefined, []]) {
    const alie = craftUpdate(attack({ kind: 'alie', fraction: 0.2, z: 1 }), honest, { ...ctx, colluders: c });
    t.deepEqual(alie.delta, honest); // std 0: mean − z·0
    t.regex(alie.note ?? '', /fell back to this node's own honest update.*std 0/);
    const ipm = craftUpdate(attack({ kind: 'ipm', fraction: 0.2 }), honest, { ...ctx, colluders: c });
    t.deepEqual(ipm.delta, new Float32Array([-0.5, 1, -2]));
    t.regex(ipm.note ?? '', /fell back/);
  }
  const single = craftUpdate(attack({ kind: 'alie', fraction: 0.2 }), honest, { ...ctx, colluders: [honest] });
  t.deepEqual(single.delta, honest);
  t.regex(single.note ?? '', /single honest sample: std 0/);
  const mismatched = craftUpdate(attack({ kind: 'ipm', fraction: 0.2, epsilon: 1 }), honest, {
    ...ctx,
    colluders: [honest, new Float32Array(5), new Float32Array([3, 0, 0])],
  });
  t.deepEqual(mismatched.delta, new Float32Array([-2, 1, -2]));
  t.regex(mismatched.note ?? '', /ignored 1 colluder update\(s\) whose length is not 3/);
});

// --- min-max and min-sum -------------------------------------------------------

test('schema: min-max and min-sum default to ∇p = −std, γ_init 50, τ 1e-5, and refuse bad values', (t) => {
  for (const kind of ['min-max', 'min-sum'] as const) {
    t.deepEqual(attack({ kind, fraction: 0.2 }), { kind, fraction: 0.2, perturbation: 'inverse-std', gamma_init: 50, tolerance: 1e-5 });
    t.deepEqual(attack({ kind, fraction: 0.2, perturbation: 'inverse-sign', gamma_init: 10, tolerance: 1e-3 }), {
      kind,
      fraction: 0.2,
      perturbation: 'inverse-sign',
      gamma_init: 10,
      tolerance: 1e-3,
    });
    t.false(attackSchema.safeParse({ kind, fraction: 0.2, perturbation: 'std' }).success);
    t.false(attackSchema.safeParse({ kind, fraction: 0.2, gamma_init: 0 }).success);
    t.false(attackSchema.safeParse({ kind, fraction: 0.2, z: 1 }).success);
    const r = attackSchema.safeParse({ kind, fraction: 0.2, gamma_init: 1, tolerance: 1 });
    t.false(r.success);
    t.regex(r.success ? '' : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('\n'), /^tolerance: .*below gamma_init/);
  }
});

test('an experiment file\'s attack section "min-max" with a fraction only parses with the defaults filled in', (t) => {
  const experiment = parseExperiment({
    name: 'min-max-defaults',
    seed: 7,
    dataset: { name: 'fashion-mnist', partition: { kind: 'iid' } },
    model: '2nn',
    nodes: 6,
    rounds: 2,
    selection: { nodes_per_round: 6, min_updates: 5, deadline_seconds: 90 },
    training: { epochs: 1, batch_size: 32, learning_rate: 0.05 },
    aggregation: { rule: 'mean' },
    attack: { kind: 'min-max', fraction: 0.34 },
  });
  t.deepEqual(experiment.attack, { kind: 'min-max', fraction: 0.34, perturbation: 'inverse-std', gamma_init: 50, tolerance: 1e-5 });
  t.true(needsCollusion(experiment.attack!));
  t.throws(() => parseExperiment({ ...experiment, attack: { kind: 'min-sum', fraction: 0.2, perturbation: 'sign' } }), { message: /perturbation/ });
});

test('halvingSearch: Algorithm 1 lands within 2τ below the edge of the feasible interval', (t) => {
  for (const edge of [3.7, 0.01, 12.5, 19.99, Math.PI]) {
    const { gamma, failed, probes } = halvingSearch((g) => g <= edge, 10, 1e-5);
    t.true(gamma <= edge && gamma > edge - 2e-5, `edge ${edge}: γ ${gamma}`);
    t.true(failed);
    t.true(probes <= 25, `${probes} probes`); // ⌈log2(γ_init/τ)⌉ + 1 = 21
  }
  // Nothing feasible: γ_succ stays 0. Everything feasible: the top of [0, 2·γ_init), and no failure.
  t.deepEqual(halvingSearch(() => false, 10, 1e-5).gamma, 0);
  const top = halvingSearch(() => true, 10, 1e-5);
  t.false(top.failed);
  t.true(top.gamma < 20 && top.gamma > 20 - 2e-5, `${top.gamma}`);
  // A τ below float resolution still stops.
  t.true(halvingSearch((g) => g <= 3.7, 10, 1e-300).probes <= 200);
  t.throws(() => halvingSearch(() => true, 0, 1e-5), { instanceOf: RangeError });
});

// Six colluders' honest updates of 9 coordinates, from a fixed seed.
const cloud = ((): Float32Array[] => {
  const rng = new Rng(11);
  return Array.from({ length: 6 }, () => Float32Array.from({ length: 9 }, () => rng.normal(0.3, 1)));
})();

/** Independent of craft.ts: the benign mean, the perturbation, and each attack's constraint, all in float64. */
function reference(samples: readonly Float32Array[], perturbation: string) {
  const m = samples.length;
  const d = samples[0].length;
  const mean = Array.from({ length: d }, (_, k) => samples.reduce((a, s) => a + s[k], 0) / m);
  const std = mean.map((mu, k) => Math.sqrt(samples.reduce((a, s) => a + (s[k] - mu) ** 2, 0) / (m - 1)));
  const norm = Math.hypot(...mean);
  const p =
    perturbation === 'inverse-std' ? std.map((x) => -x) : perturbation === 'inverse-unit' ? mean.map((x) => -x / norm) : mean.map((x) => -Math.sign(x));
  const sq = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((acc, x, k) => acc + (x - b[k]) ** 2, 0);
  const maxPair = Math.max(...samples.flatMap((a) => samples.map((b) => sq(a, b))));
  const maxSum = Math.max(...samples.map((a) => samples.reduce((acc, b) => acc + sq(a, b), 0)));
  const holds = {
    'min-max': (v: ArrayLike<number>) => Math.max(...samples.map((b) => sq(v, b))) <= maxPair,
    'min-sum': (v: ArrayLike<number>) => samples.reduce((acc, b) => acc + sq(v, b), 0) <= maxSum,
  };
  // The exact γ* in float64. min-sum: Σ‖a_i + γp‖² = Σ‖a_i‖² + mγ²‖p‖² (Σ a_i = 0, a_i = mean − b_i).
  // min-max: the smallest positive root over i of ‖a_i + γp‖² = max pair distance².
  const pp = sq(p, new Array(d).fill(0));
  const a = samples.map((b) => mean.map((mu, k) => mu - b[k]));
  const dot = (x: number[], y: number[]) => x.reduce((acc, v, k) => acc + v * y[k], 0);
  const gammaStar = {
    'min-sum': Math.sqrt((maxSum - a.reduce((acc, ai) => acc + dot(ai, ai), 0)) / (m * pp)),
    'min-max': Math.min(...a.map((ai) => (-dot(ai, p) + Math.sqrt(dot(ai, p) ** 2 - pp * (dot(ai, ai) - maxPair))) / pp)),
  };
  const at = (gamma: number) => mean.map((mu, k) => mu + gamma * p[k]);
  return { mean, p, holds, gammaStar, at };
}

for (const kind of ['min-max', 'min-sum'] as const) {
  for (const perturbation of ['inverse-std', 'inverse-unit', 'inverse-sign'] as const) {
    test(`${kind} with ∇p ${perturbation}: mean + γ·∇p meets the constraint at γ, breaks it at 1.05·γ, γ within 2τ of the exact γ*`, (t) => {
      const ref = reference(cloud, perturbation);
      const r = craftUpdate(attack({ kind, fraction: 0.2, perturbation }), cloud[2], { ...ctx, colluders: cloud });
      t.is(r.note, undefined);
      const gamma = r.gamma!;
      t.true(gamma > 0.1, `γ ${gamma}`);
      // The update sent is mean + γ·∇p in the direction asked for.
      close(t, r.delta, ref.at(gamma), 1e-6);
      // Maximal: the constraint holds for the update as sent, and no longer 5% further out.
      t.true(ref.holds[kind](r.delta), 'the constraint holds at γ');
      t.false(ref.holds[kind](ref.at(1.05 * gamma)), 'the constraint is broken at 1.05·γ');
      t.false(ref.holds[kind](ref.at(gamma + 1e-3)), 'the constraint is broken at γ + 1e-3');
      t.true(Math.abs(gamma - ref.gammaStar[kind]) < 2e-5, `γ ${gamma} vs γ* ${ref.gammaStar[kind]}`);
      t.true(gamma <= ref.gammaStar[kind] + 1e-6, `γ ${gamma} above γ* ${ref.gammaStar[kind]}`);
    });
  }
}

test('min-max and min-sum differ, and the three perturbations point where they say', (t) => {
  const send = (kind: string, perturbation: string) => craftUpdate(attack({ kind, fraction: 0.2, perturbation }), cloud[0], { ...ctx, colluders: cloud });
  const { mean } = reference(cloud, 'inverse-std');
  const sign = send('min-max', 'inverse-sign');
  // inverse-sign moves every coordinate by exactly γ against the mean's sign.
  close(t, Array.from(sign.delta, (x, k) => (x - mean[k]) / sign.gamma!), mean.map((x) => -Math.sign(x)), 1e-5);
  // inverse-unit moves by γ in total, straight back towards the origin.
  const unit = send('min-sum', 'inverse-unit');
  const moved = Array.from(unit.delta, (x, k) => x - mean[k]);
  t.true(Math.abs(Math.hypot(...moved) - unit.gamma!) < 1e-5);
  close(t, moved.map((x) => x / unit.gamma!), mean.map((x) => -x / Math.hypot(...mean)), 1e-5);
  // inverse-std moves each coordinate by γ·std, down.
  const std = send('min-max', 'inverse-std');
  const { p } = reference(cloud, 'inverse-std');
  close(t, Array.from(std.delta, (x, k) => (x - mean[k]) / std.gamma!), p, 1e-5);
  t.notDeepEqual(send('min-max', 'inverse-std').delta, send('min-sum', 'inverse-std').delta);
});

test('min-max and min-sum: every colluder computes the identical update from the same samples, inputs untouched', (t) => {
  const copy = cloud.map((c) => Float32Array.from(c));
  for (const kind of ['min-max', 'min-sum']) {
    const spec = attack({ kind, fraction: 0.2 });
    const views = cloud.map((own) => craftUpdate(spec, own, { ...ctx, colluders: cloud }));
    for (const v of views) t.deepEqual(v, views[0]);
    t.deepEqual(craftUpdate(spec, cloud[0], { ...ctx, colluders: copy }), views[0]);
  }
  t.deepEqual(cloud, copy);
});

test('min-max and min-sum degrade with a note: no or one sample, a zero ∇p, a search range too small', (t) => {
  const honest = new Float32Array([1, -2, 4]);
  for (const kind of ['min-max', 'min-sum']) {
    for (const perturbation of ['inverse-std', 'inverse-unit', 'inverse-sign']) {
      const spec = attack({ kind, fraction: 0.2, perturbation });
      for (const c of [undefined, []]) {
        const r = craftUpdate(spec, honest, { ...ctx, colluders: c });
        t.deepEqual(r.delta, honest);
        t.is(r.gamma, 0);
        t.regex(r.note ?? '', /fell back to this node's own honest update.*no spread to hide in: sent the mean \(γ = 0\)/);
      }
      const single = craftUpdate(spec, honest, { ...ctx, colluders: [honest] });
      t.deepEqual(single.delta, honest);
      t.regex(single.note ?? '', /single honest sample.*γ = 0/);
    }
    // Identical samples: −std is zero, so there is no direction to move in.
    const same = craftUpdate(attack({ kind, fraction: 0.2 }), honest, { ...ctx, colluders: [honest, Float32Array.from(honest)] });
    t.deepEqual(same.delta, honest);
    t.regex(same.note ?? '', /∇p \(inverse-std\) is zero, every coordinate's std is 0: sent the mean/);
    // A zero mean has no sign and no unit vector.
    const zeroMean = [new Float32Array([1, -1]), new Float32Array([-1, 1])];
    for (const perturbation of ['inverse-unit', 'inverse-sign']) {
      const r = craftUpdate(attack({ kind, fraction: 0.2, perturbation }), zeroMean[0], { ...ctx, colluders: zeroMean });
      t.deepEqual(r.delta, new Float32Array(2));
      t.regex(r.note ?? '', /the mean is 0/);
    }
    // γ* ≈ 1 but the search only reaches 2·gamma_init = 0.02: it says so.
    const capped = craftUpdate(attack({ kind, fraction: 0.2, gamma_init: 0.01, tolerance: 1e-7 }), cloud[0], { ...ctx, colluders: cloud });
    t.true(capped.gamma! > 0.0199 && capped.gamma! < 0.02, `${capped.gamma}`);
    t.regex(capped.note ?? '', /held at every γ probed.*2·gamma_init = 0\.02.*raise gamma_init/);
    // A colluder update of another length is ignored, as for ALIE.
    const odd = craftUpdate(attack({ kind, fraction: 0.2 }), cloud[0], { ...ctx, colluders: [...cloud, new Float32Array(3)] });
    t.deepEqual(odd.delta, craftUpdate(attack({ kind, fraction: 0.2 }), cloud[0], { ...ctx, colluders: cloud }).delta);
    t.regex(odd.note ?? '', /ignored 1 colluder update\(s\) whose length is not 9/);
  }
});

// --- the collusion channel ----------------------------------------------------

const collusionModule = new URL('./collusion.js', import.meta.url).href;

/** A separate attacker process: shares its update after `delayMs`, then waits for `expected`. */
async function attackerProcess(dir: string, nodeId: string, values: number[], delayMs: number, expected: number, timeoutMs: number): Promise<number[][]> {
  const code = `
    import { shareHonestUpdate, awaitColluders } from ${JSON.stringify(collusionModule)};
    const [dir, nodeId, values, delayMs, expected, timeoutMs] = JSON.parse(process.argv[1]);
    await new Promise((r) => setTimeout(r, delayMs));
    await shareHonestUpdate(dir, 3, nodeId, new Float32Array(values));
    const got = await awaitColluders(dir, 3, expected, timeoutMs);
    process.stdout.write(JSON.stringify(got.map((a) => Array.from(a))));
  `;
  const { stdout } = await run(process.execPath, [
    '--input-type=module',
    '-e',
    code,
    JSON.stringify([dir, nodeId, values, delayMs, expected, timeoutMs]),
  ]);
  return JSON.parse(stdout) as number[][];
}

test('two attacker processes meet through the directory and see the same updates', async (t) => {
  const dir = join(tempDir(t), 'not-yet-created');
  const [a, b] = await Promise.all([
    attackerProcess(dir, 'n-bbb', [1, 2, 3], 0, 2, 20_000),
    attackerProcess(dir, 'n-aaa', [4, 5, 6.5], 300, 2, 20_000),
  ]);
  // Ordered by node id, so both compute the same crafted update.
  t.deepEqual(a, [[4, 5, 6.5], [1, 2, 3]]);
  t.deepEqual(b, a);
  t.deepEqual(readdirSync(dir).sort(), ['r3-n-aaa.f32', 'r3-n-bbb.f32']);
});

test('concurrent writers in one process: a waiter sees both once both are shared', async (t) => {
  const dir = tempDir(t);
  const waiting = awaitColluders(dir, 0, 2, 10_000);
  await Promise.all([
    shareHonestUpdate(dir, 0, 'n-2', new Float32Array([2, 2])),
    shareHonestUpdate(dir, 0, 'n-1', new Float32Array([1, 1])),
    shareHonestUpdate(dir, 1, 'n-9', new Float32Array([9, 9])), // another round: not counted
  ]);
  t.deepEqual(await waiting, [new Float32Array([1, 1]), new Float32Array([2, 2])]);
  // Sharing again in the same round replaces the earlier update.
  await shareHonestUpdate(dir, 0, 'n-1', new Float32Array([1.5, 1.5]));
  t.deepEqual(await awaitColluders(dir, 0, 2, 0), [new Float32Array([1.5, 1.5]), new Float32Array([2, 2])]);
});

test('a missing colluder: returns what there is once the timeout passes', async (t) => {
  const dir = tempDir(t);
  await shareHonestUpdate(dir, 5, 'n-a', new Float32Array([1]));
  await shareHonestUpdate(dir, 5, 'n-b', new Float32Array([2]));
  const started = Date.now();
  const got = await awaitColluders(dir, 5, 3, 250);
  const waited = Date.now() - started;
  t.deepEqual(got, [new Float32Array([1]), new Float32Array([2])]);
  t.true(waited >= 240, `waited ${waited} ms`);
  // Nobody at all: an empty list, also from a directory that does not exist.
  t.deepEqual(await awaitColluders(dir, 6, 1, 50), []);
  t.deepEqual(await awaitColluders(join(dir, 'missing'), 6, 1, 50), []);
});

test('awaitColluders stops when its signal aborts', async (t) => {
  const dir = tempDir(t);
  const controller = new AbortController();
  const waiting = awaitColluders(dir, 0, 2, 60_000, controller.signal);
  setTimeout(() => controller.abort(), 50);
  await t.throwsAsync(waiting, { name: 'AbortError' });
  await t.throwsAsync(awaitColluders(dir, 0, 1, 1000, AbortSignal.abort()), { name: 'AbortError' });
});

test('writers delete the files of rounds older than round − 2', async (t) => {
  const dir = tempDir(t);
  for (let round = 0; round <= 5; round++) {
    await shareHonestUpdate(dir, round, 'n-x', new Float32Array([round]));
    await shareHonestUpdate(dir, round, 'n-y', new Float32Array([-round]));
  }
  t.deepEqual(readdirSync(dir).sort(), [
    'r3-n-x.f32',
    'r3-n-y.f32',
    'r4-n-x.f32',
    'r4-n-y.f32',
    'r5-n-x.f32',
    'r5-n-y.f32',
  ]);
  t.deepEqual(await awaitColluders(dir, 4, 2, 0), [new Float32Array([4]), new Float32Array([-4])]);
});

test('the channel refuses ids that are not file-name safe and bad arguments', async (t) => {
  const dir = tempDir(t);
  await t.throwsAsync(shareHonestUpdate(dir, 0, '../escape', new Float32Array(1)), { instanceOf: RangeError });
  await t.throwsAsync(shareHonestUpdate(dir, -1, 'n-a', new Float32Array(1)), { instanceOf: RangeError });
  await t.throwsAsync(awaitColluders(dir, 0, 0, 10), { instanceOf: RangeError });
  t.deepEqual(readdirSync(dir), []);
});

import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { Rng } from '../core/rng.js';
import { alieZMax, craftUpdate, flipLabel, flipLabels, inverseNormalCdf } from './craft.js';
import { awaitColluders, shareHonestUpdate } from './collusion.js';
import { attackSchema, needsCollusion, poisonsData, type AttackSpec } from '../aggregator/experiment/attack-schema.js';

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

test('needsCollusion is true for alie and ipm only; poisonsData for label-flip only', (t) => {
  const kinds = ['sign-flip', 'gaussian-noise', 'scaling', 'label-flip', 'alie', 'ipm', 'free-ride'];
  t.deepEqual(
    kinds.filter((kind) => needsCollusion(attack({ kind, fraction: 0.1 }))),
    ['alie', 'ipm'],
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

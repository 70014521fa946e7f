// Server optimizers (Reddi et al. 2021, Algorithm 2; Hsu et al. 2019): short
// sequences computed by hand, checked against a float64 reference; FedAvg's
// exactness; purity; the checkpoint encoding; FedAdam's sign-like steps; and
// the specs, states and inputs refused.
import test from 'ava';
import fc from 'fast-check';
import {
  applyServerOptimizer,
  decodeServerState,
  encodeServerState,
  initialV,
  resolveServerOptimizer,
  ServerOptimizerError,
  type ServerOptimizerName,
  type ServerOptimizerSpec,
  type ServerOptimizerState,
} from './server-optimizers.js';

const f32 = (...xs: number[]) => Float32Array.from(xs);

/** float32 results against float64 expectations: a few float32 ulps of rounding per round. */
function near(t: { true(c: boolean, m?: string): void }, actual: ArrayLike<number>, expected: readonly number[], what: string, rel = 1e-6): void {
  t.true(
    actual.length === expected.length && expected.every((e, i) => Math.abs(actual[i]! - e) <= rel * Math.max(1, Math.abs(e))),
    `${what}: ${JSON.stringify(Array.from(actual))} ≉ ${JSON.stringify(expected)}`,
  );
}

function bitsEqual(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return x.every((bits, i) => bits === y[i]);
}

/** A small deterministic generator of float32 vectors (xorshift32). */
function vectors(seed: number) {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
  return (d: number, scale = 1) => Float32Array.from({ length: d }, () => (next() * 2 - 1) * scale);
}

/**
 * Algorithm 2 written out again, per round, in float64 (no float32 rounding
 * of the state): the reference the hand-computed numbers are checked against.
 */
function reference(spec: Required<ServerOptimizerSpec>, global: readonly number[], deltas: readonly (readonly number[])[]) {
  const { name, server_learning_rate: eta, beta1, beta2, tau, momentum } = spec;
  let x = [...global];
  let m = global.map(() => 0);
  let v = global.map(() => tau * tau);
  const rounds: { x: number[]; m: number[]; v: number[] }[] = [];
  for (const delta of deltas) {
    if (name === 'fedavg') {
      x = x.map((xi, j) => xi + eta * delta[j]!);
    } else if (name === 'fedavgm') {
      m = m.map((mi, j) => momentum * mi + delta[j]!);
      x = x.map((xi, j) => xi + eta * m[j]!);
    } else {
      m = m.map((mi, j) => beta1 * mi + (1 - beta1) * delta[j]!);
      v = v.map((vi, j) => {
        const sq = delta[j]! ** 2;
        if (name === 'fedadagrad') return vi + sq;
        if (name === 'fedadam') return beta2 * vi + (1 - beta2) * sq;
        return vi - (1 - beta2) * sq * Math.sign(vi - sq);
      });
      x = x.map((xi, j) => xi + (eta * m[j]!) / (Math.sqrt(v[j]!) + tau));
    }
    rounds.push({ x: [...x], m: [...m], v: [...v] });
  }
  return rounds;
}

const full = (s: ServerOptimizerSpec): Required<ServerOptimizerSpec> => ({ beta1: 0.9, beta2: 0.99, tau: 1e-3, momentum: 0.9, ...s });

/** Runs the optimizer over the rounds, carrying its state; returns each round's model and state. */
function runRounds(spec: ServerOptimizerSpec, global: Float32Array, deltas: readonly Float32Array[], state?: ServerOptimizerState) {
  const out: { weights: Float32Array; state: ServerOptimizerState }[] = [];
  let x = global;
  for (const delta of deltas) {
    const step = applyServerOptimizer(spec, x, delta, state);
    out.push(step);
    x = step.weights;
    state = step.state;
  }
  return out;
}

interface HandCase {
  spec: ServerOptimizerSpec;
  global: number[];
  deltas: number[][];
  /** Per round: the model, and m and v where the optimizer keeps them. */
  expected: { x: number[]; m?: number[]; v?: number[] }[];
}

const HAND: Record<ServerOptimizerName, HandCase> = {
  // x ← x + 0.5·Δ
  fedavg: {
    spec: { name: 'fedavg', server_learning_rate: 0.5 },
    global: [1, -2, 0.25],
    deltas: [
      [0.5, 1, -1],
      [2, -4, 0.5],
    ],
    expected: [{ x: [1.25, -1.5, -0.25] }, { x: [2.25, -3.5, 0] }],
  },
  // m ← 0.5·m + Δ; x ← x + 0.5·m
  fedavgm: {
    spec: { name: 'fedavgm', server_learning_rate: 0.5, momentum: 0.5 },
    global: [0, 1],
    deltas: [
      [1, -2],
      [1, 2],
      [-2, 0],
    ],
    expected: [
      { x: [0.5, 0], m: [1, -2] }, // m = Δ; x = [0 + 0.5, 1 − 1]
      { x: [1.25, 0.5], m: [1.5, 1] }, // m = [0.5 + 1, −1 + 2]; x = [0.5 + 0.75, 0 + 0.5]
      { x: [0.625, 0.75], m: [-1.25, 0.5] }, // m = [0.75 − 2, 0.5 + 0]; x = [1.25 − 0.625, 0.5 + 0.25]
    ],
  },
  // β1 = 0.5, τ = 0.5 (v starts at 0.25), η = 1: m ← (m + Δ)/2; v ← v + Δ²; x ← x + m/(√v + 0.5)
  fedadagrad: {
    spec: { name: 'fedadagrad', server_learning_rate: 1, beta1: 0.5, tau: 0.5 },
    global: [0, 0],
    deltas: [
      [1.2, -0.375],
      [8.4, 1.5],
      [-1, 0.5],
    ],
    expected: [
      // v = [0.25 + 1.44, 0.25 + 0.140625] = [1.69, 0.390625], √v = [1.3, 0.625]; x = [0.6/1.8, −0.1875/1.125]
      { x: [1 / 3, -1 / 6], m: [0.6, -0.1875], v: [1.69, 0.390625] },
      // v = [1.69 + 70.56, 0.390625 + 2.25] = [72.25, 2.640625], √v = [8.5, 1.625]; steps [4.5/9, 0.65625/2.125]
      { x: [1 / 3 + 0.5, -1 / 6 + 0.65625 / 2.125], m: [4.5, 0.65625], v: [72.25, 2.640625] },
      // steps [1.75/(√73.25 + 0.5), 0.578125/(√2.890625 + 0.5)] = [0.1931861…, 0.2627523…]
      { x: [1.0265194624, 0.4049189994], m: [1.75, 0.578125], v: [73.25, 2.890625] },
    ],
  },
  // β1 = 0.5, β2 = 0.75, τ = 0.5, η = 1: m ← (m + Δ)/2; v ← 0.75·v + 0.25·Δ²; x ← x + m/(√v + 0.5)
  fedadam: {
    spec: { name: 'fedadam', server_learning_rate: 1, beta1: 0.5, beta2: 0.75, tau: 0.5 },
    global: [0, 0],
    deltas: [
      [0.5, 2],
      [1.375, -1],
      [-1, 0.25],
    ],
    expected: [
      // v = [0.1875 + 0.0625, 0.1875 + 1] = [0.25, 1.1875]; x = [0.25/(0.5 + 0.5), 1/(√1.1875 + 0.5)]
      { x: [0.25, 0.6290397183], m: [0.25, 1], v: [0.25, 1.1875] },
      // v = [0.1875 + 0.47265625, 0.890625 + 0.25] = [0.66015625, 1.140625], √v[0] = 0.8125;
      // m[1] = (1 − 1)/2 = 0, so coordinate 1 stays put; x[0] = 0.25 + 0.8125/1.3125
      { x: [0.25 + 0.8125 / 1.3125, 0.6290397183], m: [0.8125, 0], v: [0.66015625, 1.140625] },
      // v = [0.4951171875 + 0.25, 0.85546875 + 0.015625]; steps [−0.09375/(√0.7451171875 + 0.5), 0.125/(√0.87109375 + 0.5)]
      { x: [0.8002756981, 0.7162495865], m: [-0.09375, 0.125], v: [0.7451171875, 0.87109375] },
    ],
  },
  // β1 = 0.5, β2 = 0.75, τ = 0.5, η = 1: v ← v − 0.25·Δ²·sign(v − Δ²), through all three signs
  fedyogi: {
    spec: { name: 'fedyogi', server_learning_rate: 1, beta1: 0.5, beta2: 0.75, tau: 0.5 },
    global: [0, 0],
    deltas: [
      [1, 0.5],
      [0.5, -2],
      [-1, 1],
    ],
    expected: [
      // Δ² = [1, 0.25] vs v = 0.25: v[0] grows by 0.25·1, v[1] = Δ² stays; x = [0.5/(√0.5 + 0.5), 0.25/(0.5 + 0.5)]
      { x: [0.4142135624, 0.25], m: [0.5, 0.25], v: [0.5, 0.25] },
      // Δ² = [0.25, 4]: v[0] > Δ² shrinks by 0.0625, v[1] < Δ² grows by 1; m = [0.5, −0.875]
      { x: [0.8447144364, -0.2907797402], m: [0.5, -0.875], v: [0.4375, 1.25] },
      // Δ² = [1, 1]: v[0] < 1 grows by 0.25, v[1] > 1 shrinks by 0.25 to 1; x[1] += 0.0625/1.5
      { x: [0.6566251807, -0.2907797402 + 0.0625 / 1.5], m: [-0.25, 0.0625], v: [0.6875, 1] },
    ],
  },
};

for (const [name, c] of Object.entries(HAND) as [ServerOptimizerName, HandCase][]) {
  test(`${name}: hand-computed rounds`, (t) => {
    // The numbers written out above are Algorithm 2's, to float64 precision.
    const ref = reference(full(c.spec), c.global, c.deltas);
    c.expected.forEach((e, r) => {
      near(t, ref[r]!.x, e.x, `reference x, round ${r + 1}`, 1e-9);
      if (e.m) near(t, ref[r]!.m, e.m, `reference m, round ${r + 1}`, 1e-9);
      if (e.v) near(t, ref[r]!.v, e.v, `reference v, round ${r + 1}`, 1e-9);
    });
    // And the float32 implementation reproduces them.
    const rounds = runRounds(c.spec, Float32Array.from(c.global), c.deltas.map((d) => Float32Array.from(d)));
    c.expected.forEach((e, r) => {
      const { weights, state } = rounds[r]!;
      near(t, weights, e.x, `x, round ${r + 1}`);
      if (e.m) near(t, state.m!, e.m, `m, round ${r + 1}`);
      else t.is(state.m, undefined);
      if (e.v) near(t, state.v!, e.v, `v, round ${r + 1}`);
      else t.is(state.v, undefined);
    });
  });
}

test('every optimizer agrees with the float64 reference over ten rounds of random vectors', (t) => {
  const gen = vectors(7);
  const global = gen(50, 2);
  const deltas = Array.from({ length: 10 }, (_, r) => gen(50, r % 3 === 0 ? 1e-2 : 0.5));
  const specs: ServerOptimizerSpec[] = [
    { name: 'fedavg', server_learning_rate: 0.7 },
    { name: 'fedavgm', server_learning_rate: 0.3, momentum: 0.9 },
    { name: 'fedadagrad', server_learning_rate: 0.1, beta1: 0.9, tau: 1e-3 },
    { name: 'fedadam', server_learning_rate: 0.01, beta1: 0.9, beta2: 0.99, tau: 1e-3 },
    { name: 'fedyogi', server_learning_rate: 0.01, beta1: 0.9, beta2: 0.99, tau: 1e-3 },
  ];
  for (const spec of specs) {
    const ref = reference(full(spec), Array.from(global), deltas.map((d) => Array.from(d)));
    const rounds = runRounds(spec, global, deltas);
    near(t, rounds.at(-1)!.weights, ref.at(-1)!.x, `${spec.name} after 10 rounds`, 2e-6);
  }
});

test('fedavg with η = 1 is global + Δ bit for bit, and so are fedavgm with β = 0 and any fedavgm round 1', (t) => {
  const gen = vectors(11);
  const global = gen(4096, 3);
  const deltas = [gen(4096, 0.1), gen(4096, 1e-4), gen(4096, 10)];
  let x = global;
  let mState: ServerOptimizerState | undefined;
  for (const delta of deltas) {
    const plain = new Float32Array(x.length);
    for (let j = 0; j < x.length; j++) plain[j] = x[j]! + delta[j]!;
    const avg = applyServerOptimizer({ name: 'fedavg', server_learning_rate: 1 }, x, delta, undefined);
    t.true(bitsEqual(avg.weights, plain));
    t.deepEqual(avg.state, {});
    const zeroMomentum = applyServerOptimizer({ name: 'fedavgm', server_learning_rate: 1, momentum: 0 }, x, delta, mState);
    t.true(bitsEqual(zeroMomentum.weights, plain));
    mState = zeroMomentum.state;
    x = plain;
  }
  const first = applyServerOptimizer({ name: 'fedavgm', server_learning_rate: 1, momentum: 0.99 }, global, deltas[0]!, undefined);
  const plain = global.map((g, j) => g + deltas[0]![j]!);
  t.true(bitsEqual(first.weights, plain));
});

test('no input is written, and no output shares memory with an input', (t) => {
  const gen = vectors(3);
  const names: ServerOptimizerName[] = ['fedavg', 'fedavgm', 'fedadagrad', 'fedadam', 'fedyogi'];
  for (const name of names) {
    const spec: ServerOptimizerSpec = { name, server_learning_rate: 0.5 };
    const global = gen(64);
    const delta = gen(64);
    // A state from a first round, then a second round from it.
    const { state } = applyServerOptimizer(spec, global, gen(64), undefined);
    const copies = { global: global.slice(), delta: delta.slice(), m: state.m?.slice(), v: state.v?.slice() };
    const out = applyServerOptimizer(spec, global, delta, state);
    t.true(bitsEqual(global, copies.global), `${name} wrote global`);
    t.true(bitsEqual(delta, copies.delta), `${name} wrote the aggregate`);
    if (state.m) t.true(bitsEqual(state.m, copies.m!), `${name} wrote state.m`);
    if (state.v) t.true(bitsEqual(state.v, copies.v!), `${name} wrote state.v`);
    const inputs = [global, delta, state.m, state.v].filter((a): a is Float32Array => a !== undefined).map((a) => a.buffer);
    for (const a of [out.weights, out.state.m, out.state.v]) {
      if (a) t.false(inputs.includes(a.buffer), `${name} returned an input's memory`);
    }
  }
});

test('state round-trips through encode/decode exactly, and a run resumed from the bytes is bit-identical', (t) => {
  const special = f32(0, -0, 1e-45, -1e-45, 3.4028234663852886e38, -1.1754943508222875e-38, 1 / 3, -7.5);
  for (const state of [{}, { m: special }, { m: special, v: special.map((x) => Math.abs(x)) }, { v: f32(1, 2) }] as ServerOptimizerState[]) {
    const bytes = encodeServerState(state);
    const d = state.m?.length ?? state.v?.length ?? 0;
    const back = decodeServerState(bytes, d);
    t.deepEqual(Object.keys(back).sort(), Object.keys(state).sort());
    if (state.m) t.true(bitsEqual(back.m!, state.m));
    if (state.v) t.true(bitsEqual(back.v!, state.v));
    t.deepEqual(encodeServerState(back), bytes);
  }

  // The documented layout: "CFSO", version 1, flags, reserved, u32 d, then m and v little-endian.
  const bytes = encodeServerState({ m: f32(1, -2), v: f32(0.5, 4) });
  t.deepEqual(Array.from(bytes.subarray(0, 12)), [0x43, 0x46, 0x53, 0x4f, 1, 3, 0, 0, 2, 0, 0, 0]);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  t.deepEqual([12, 16, 20, 24].map((o) => view.getFloat32(o, true)), [1, -2, 0.5, 4]);
  t.is(bytes.length, 12 + 4 * 2 * 2);

  // From a Buffer at an odd offset (as a small readFileSync may return), and sharing nothing with it.
  const gen = vectors(5);
  const spec: ServerOptimizerSpec = { name: 'fedyogi', server_learning_rate: 0.02 };
  const global = gen(300);
  const deltas = [gen(300), gen(300), gen(300), gen(300)];
  const straight = runRounds(spec, global, deltas);
  const saved = encodeServerState(straight[1]!.state);
  const odd = Buffer.concat([Buffer.from([9]), Buffer.from(saved)]).subarray(1);
  t.not(odd.byteOffset % 4, 0);
  const restored = decodeServerState(odd, 300);
  odd.fill(0);
  const resumed = runRounds(spec, straight[1]!.weights, deltas.slice(2), restored);
  t.true(bitsEqual(resumed[1]!.weights, straight[3]!.weights));
  t.deepEqual(encodeServerState(resumed[1]!.state), encodeServerState(straight[3]!.state));
});

test('decode refuses bytes that are not a state for this model', (t) => {
  const good = encodeServerState({ m: f32(1, 2, 3), v: f32(1, 1, 1) });
  const err = (bytes: Uint8Array, length: number, pattern: RegExp) =>
    t.regex(t.throws(() => decodeServerState(bytes, length), { instanceOf: RangeError })!.message, pattern);
  err(good, 4, /3 values but the model has 4/);
  err(good.subarray(0, good.length - 1), 3, /bytes; its header says/);
  err(good.subarray(0, 5), 3, /header/);
  err(Uint8Array.from([...good.subarray(0, 3), 0x00, ...good.subarray(4)]), 3, /CFSO/);
  const version = good.slice();
  version[4] = 2;
  err(version, 3, /version 2/);
  const flags = good.slice();
  flags[5] = 7;
  err(flags, 3, /flags/);
});

test('fedadam with β1 = 0 on a constant Δ moves each coordinate by ≈ η·sign(Δ) once v has warmed up', (t) => {
  const eta = 0.01;
  const spec: ServerOptimizerSpec = { name: 'fedadam', server_learning_rate: eta, beta1: 0, beta2: 0.9, tau: 1e-6 };
  const delta = f32(0.5, -2, 0.01, -0.03, 40);
  const zero = new Float32Array(delta.length);
  let state: ServerOptimizerState | undefined;
  const steps: Float32Array[] = [];
  for (let r = 0; r < 150; r++) {
    // Applied to the zero model each round, the new weights are the step itself.
    const out = applyServerOptimizer(spec, zero, delta, state);
    steps.push(out.weights);
    state = out.state;
  }
  const relativelyNear = (actual: Float32Array, expected: number[], rel: number, what: string) =>
    t.true(
      expected.every((e, j) => Math.abs(actual[j]! - e) <= rel * Math.abs(e)),
      `${what}: ${JSON.stringify(Array.from(actual))} ≉ ${JSON.stringify(expected)}`,
    );
  // No bias correction (Algorithm 2): round 1's v is β2·τ² + (1 − β2)·Δ², so the step is ≈ η/√(1 − β2) ≈ 3.16·η.
  relativelyNear(steps[0]!, Array.from(delta, (d) => (eta * Math.sign(d)) / Math.sqrt(0.1)), 1e-3, 'round 1');
  // After 150 rounds β2^150 ≈ 1.4e-7 of the start is left and v ≈ Δ²: steps are η·Δ/(|Δ| + τ) ≈ η·sign(Δ), whatever |Δ|.
  relativelyNear(steps.at(-1)!, Array.from(delta, (d) => eta * Math.sign(d)), 2e-4, 'round 150');
  // And the steps shrink toward it monotonically, coordinate by coordinate.
  for (let j = 0; j < delta.length; j++) {
    t.true(steps.every((s, r) => r === 0 || Math.abs(s[j]!) <= Math.abs(steps[r - 1]![j]!)), `coordinate ${j}`);
  }
});

test('v starts at τ² (rounded up to float32), m at 0', (t) => {
  for (const tau of [1e-3, 0.5, 1e-9, 1e-20, 3e-23]) {
    const v0 = initialV(tau);
    t.true(v0 >= tau * tau && Math.fround(v0) === v0 && v0 > 0, `τ = ${tau}`);
  }
  // A zero Δ in round 1 leaves the model, m = 0 and v = τ² (FedAdam: β2·τ² + 0, FedYogi: sign(τ² − 0)·0).
  for (const name of ['fedadagrad', 'fedyogi'] as const) {
    const out = applyServerOptimizer({ name, server_learning_rate: 1, tau: 0.5 }, f32(1, 2), f32(0, 0), undefined);
    t.deepEqual(Array.from(out.weights), [1, 2]);
    t.deepEqual(Array.from(out.state.m!), [0, 0]);
    t.deepEqual(Array.from(out.state.v!), [0.25, 0.25]);
  }
});

test('invalid specs are refused, naming the field', (t) => {
  const bad: [unknown, RegExp][] = [
    [{ name: 'sgd', server_learning_rate: 1 }, /name must be one of/],
    [{ name: 'fedavg' }, /server_learning_rate must be a number/],
    [{ name: 'fedavg', server_learning_rate: '1' }, /server_learning_rate must be a number; got string/],
    [{ name: 'fedavg', server_learning_rate: 0 }, /server_learning_rate must be > 0; got 0/],
    [{ name: 'fedavgm', server_learning_rate: -0.1 }, /server_learning_rate must be > 0/],
    [{ name: 'fedadam', server_learning_rate: NaN }, /server_learning_rate must be finite; got NaN/],
    [{ name: 'fedadam', server_learning_rate: Infinity }, /server_learning_rate must be finite/],
    [{ name: 'fedadam', server_learning_rate: 1, beta1: 1 }, /beta1 must be in \[0, 1\); got 1/],
    [{ name: 'fedadam', server_learning_rate: 1, beta1: -0.01 }, /beta1 must be in \[0, 1\)/],
    [{ name: 'fedyogi', server_learning_rate: 1, beta2: 1.5 }, /beta2 must be in \[0, 1\)/],
    [{ name: 'fedyogi', server_learning_rate: 1, beta2: NaN }, /beta2 must be finite/],
    [{ name: 'fedavgm', server_learning_rate: 1, momentum: 1 }, /momentum must be in \[0, 1\)/],
    [{ name: 'fedadagrad', server_learning_rate: 1, tau: 0 }, /tau must be > 0; got 0/],
    [{ name: 'fedadagrad', server_learning_rate: 1, tau: -1e-3 }, /tau must be > 0/],
    [{ name: 'fedadagrad', server_learning_rate: 1, tau: Infinity }, /tau must be finite/],
    // A field the optimizer does not use is still checked: a typo'd value is a mistake either way.
    [{ name: 'fedadagrad', server_learning_rate: 1, beta2: 2 }, /beta2 must be in \[0, 1\)/],
    [null, /must be an object/],
  ];
  for (const [spec, pattern] of bad) {
    const e = t.throws(() => applyServerOptimizer(spec as ServerOptimizerSpec, f32(1), f32(1), undefined), { instanceOf: ServerOptimizerError });
    t.regex(e!.message, pattern, JSON.stringify(spec));
    t.true(e instanceof RangeError);
  }
  // Defaults fill in only what the optimizer uses; fields it ignores are dropped.
  t.deepEqual(resolveServerOptimizer({ name: 'fedadam', server_learning_rate: 0.1 }), {
    name: 'fedadam',
    server_learning_rate: 0.1,
    beta1: 0.9,
    beta2: 0.99,
    tau: 1e-3,
  });
  t.deepEqual(resolveServerOptimizer({ name: 'fedadagrad', server_learning_rate: 1, beta1: 0, beta2: 0.99, momentum: 0.5 }), {
    name: 'fedadagrad',
    server_learning_rate: 1,
    beta1: 0,
    tau: 1e-3,
  });
  t.deepEqual(resolveServerOptimizer({ name: 'fedavgm', server_learning_rate: 1 }), { name: 'fedavgm', server_learning_rate: 1, momentum: 0.9 });
});

test('mismatched lengths, foreign or partial states and non-finite aggregates are refused', (t) => {
  const adam: ServerOptimizerSpec = { name: 'fedadam', server_learning_rate: 0.1 };
  const refuse = (f: () => unknown, pattern: RegExp) => t.regex(t.throws(f, { instanceOf: RangeError })!.message, pattern);
  refuse(() => applyServerOptimizer(adam, f32(1, 2, 3), f32(1, 2, 3, 4), undefined), /3 values but the aggregate has 4/);
  refuse(() => applyServerOptimizer(adam, f32(1, 2), f32(1, 2), { m: f32(0, 0, 0), v: f32(1, 1, 1) }), /state\.m has 3 values but the global model has 2/);
  refuse(() => applyServerOptimizer(adam, f32(1, 2), f32(1, 2), { m: f32(0, 0), v: f32(1) }), /state\.v has 1 values but the global model has 2/);
  refuse(() => applyServerOptimizer(adam, f32(1, 2), f32(1, 2), { m: f32(0, 0) }), /keeps both m and v, but the state has only m/);
  refuse(
    () => applyServerOptimizer({ name: 'fedavgm', server_learning_rate: 1 }, f32(1), f32(1), { m: f32(0), v: f32(1) }),
    /fedavgm keeps no v/,
  );
  refuse(() => applyServerOptimizer({ name: 'fedavg', server_learning_rate: 1 }, f32(1), f32(1), { m: f32(0) }), /fedavg keeps no m/);
  refuse(() => applyServerOptimizer(adam, f32(1, 2), f32(1, NaN), undefined), /aggregate\[1\] is NaN/);
  refuse(() => applyServerOptimizer(adam, f32(1, 2), f32(-Infinity, 0), undefined), /aggregate\[0\] is -Infinity/);
  // A state with neither vector is the state before round 1.
  t.notThrows(() => applyServerOptimizer(adam, f32(1, 2), f32(1, 2), {}));
});

test('property: one round from a decoded state equals one round from the state itself, for every optimizer', (t) => {
  const value = fc.float({ min: -10, max: 10, noNaN: true });
  const name = fc.constantFrom<ServerOptimizerName>('fedavg', 'fedavgm', 'fedadagrad', 'fedadam', 'fedyogi');
  fc.assert(
    fc.property(
      name,
      fc.integer({ min: 1, max: 8 }).chain((d) => fc.array(fc.array(value, { minLength: d, maxLength: d }), { minLength: 3, maxLength: 3 })),
      (n, [g, d1, d2]) => {
        const spec: ServerOptimizerSpec = { name: n, server_learning_rate: 0.1 };
        const first = applyServerOptimizer(spec, Float32Array.from(g!), Float32Array.from(d1!), undefined);
        const decoded = decodeServerState(encodeServerState(first.state), g!.length);
        const a = applyServerOptimizer(spec, first.weights, Float32Array.from(d2!), first.state);
        const b = applyServerOptimizer(spec, first.weights, Float32Array.from(d2!), decoded);
        return bitsEqual(a.weights, b.weights) && a.weights.every(Number.isFinite);
      },
    ),
    { numRuns: 200 },
  );
  t.pass();
});

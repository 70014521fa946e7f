// Server optimizers: how the round's aggregate Δ of the nodes' deltas moves the
// global model x. Reddi et al. 2021 ("Adaptive Federated Optimization", ICLR,
// Algorithm 2) treat −Δ as a pseudo-gradient and apply an optimizer on the
// server; FedAvg is the special case of SGD with server learning rate η = 1.
//
//   fedavg      x ← x + η·Δ
//   fedavgm     m ← β·m + Δ;                    x ← x + η·m           (Hsu et al. 2019)
//   fedadagrad  m ← β1·m + (1−β1)·Δ;  v ← v + Δ²;                     x ← x + η·m/(√v + τ)
//   fedadam     m ← β1·m + (1−β1)·Δ;  v ← β2·v + (1−β2)·Δ²;           x ← x + η·m/(√v + τ)
//   fedyogi     m ← β1·m + (1−β1)·Δ;  v ← v − (1−β2)·Δ²·sign(v − Δ²); x ← x + η·m/(√v + τ)
//
// (all per coordinate). Choices, where the paper leaves room:
//  - m starts at 0 (m₋₁ = 0) for every optimizer with a first moment.
//  - v starts at τ² (rounded up to float32): Algorithm 2 asks for v₋₁ ≥ τ², and
//    τ² is the smallest start it allows, so the first steps are not damped by
//    a made-up second moment. (Flower's FedOpt strategies start v at 0, below
//    the paper's bound; τ in the denominator still keeps their steps finite.)
//  - No bias correction, as in Algorithm 2 (unlike Kingma & Ba's Adam): the
//    first FedAdam steps are larger than η, by up to 1/√(1−β2) for β1 = 0.
//  - FedAvgM is the heavy-ball form of Hsu et al. 2019 (their v ← βv + Δw;
//    w ← w − v, with η and the sign flipped for Δ = −Δw), which Reddi et al.
//    also use as their FedAvgM baseline; not the EMA form m ← βm + (1−β)Δ. With
//    β = 0 it is FedAvg, and round 1 is FedAvg for any β.
//
// Every function here is pure: the optimizer's state goes in and comes out
// (the round engine checkpoints it with the round, so a resumed aggregator
// or a replay reproduces every round bit for bit), inputs are never written
// and outputs are fresh arrays. m and v are float32, like the model; each
// coordinate's arithmetic is in float64, rounded to float32 once when stored,
// and x is moved with the stored (rounded) m and v, so the state saved is
// exactly the state the step used. Each call makes one pass over the
// vectors (round 1 of the adaptive ones also fills v with τ² first) and
// allocates only its outputs.

export type ServerOptimizerName = 'fedavg' | 'fedavgm' | 'fedadagrad' | 'fedadam' | 'fedyogi';

export interface ServerOptimizerSpec {
  name: ServerOptimizerName;
  /** η > 0. With η = 1, fedavg adds Δ exactly as it is. */
  server_learning_rate: number;
  /** First-moment decay, 0 ≤ β1 < 1 (fedadagrad, fedadam, fedyogi; default 0.9). */
  beta1?: number;
  /** Second-moment decay, 0 ≤ β2 < 1 (fedadam, fedyogi; default 0.99). */
  beta2?: number;
  /** Adaptivity τ > 0 (fedadagrad, fedadam, fedyogi; default 1e-3): v starts at τ², steps divide by √v + τ. */
  tau?: number;
  /** Server momentum β, 0 ≤ β < 1 (fedavgm; default 0.9). */
  momentum?: number;
}

/** The optimizer's state after a round; absent (or with neither vector) before round 1. */
export interface ServerOptimizerState {
  /** First moment (fedadagrad, fedadam, fedyogi) or momentum buffer (fedavgm). */
  m?: Float32Array;
  /** Second moment (fedadagrad, fedadam, fedyogi). */
  v?: Float32Array;
}

export interface ServerOptimizerStep {
  readonly weights: Float32Array;
  readonly state: ServerOptimizerState;
}

/** A refused spec, state or input. A RangeError, so length mismatches and bad values are one kind. */
export class ServerOptimizerError extends RangeError {
  override name = 'ServerOptimizerError';
}

export const SERVER_OPTIMIZER_NAMES: readonly ServerOptimizerName[] = ['fedavg', 'fedavgm', 'fedadagrad', 'fedadam', 'fedyogi'];

/**
 * Defaults of the optional hyperparameters, which the strategies' schemas
 * (./fedavgm.ts, ./adaptive.ts) also fill in (β1 = 0.9, β2 = 0.99, τ = 1e-3 as
 * in Reddi et al. 2021's experiments). FedAdagrad without momentum is beta1: 0, Flower's choice.
 */
export const SERVER_OPTIMIZER_DEFAULTS = { beta1: 0.9, beta2: 0.99, tau: 1e-3, momentum: 0.9 } as const;

type Hyperparameter = 'beta1' | 'beta2' | 'tau' | 'momentum';

/** The hyperparameters each optimizer uses (besides η), and the vectors of state it keeps. */
const USES: Record<ServerOptimizerName, { params: readonly Hyperparameter[]; state: readonly ('m' | 'v')[] }> = {
  fedavg: { params: [], state: [] },
  fedavgm: { params: ['momentum'], state: ['m'] },
  fedadagrad: { params: ['beta1', 'tau'], state: ['m', 'v'] },
  fedadam: { params: ['beta1', 'beta2', 'tau'], state: ['m', 'v'] },
  fedyogi: { params: ['beta1', 'beta2', 'tau'], state: ['m', 'v'] },
};

/**
 * The spec checked, with the defaults of the hyperparameters its optimizer
 * uses filled in and the ones it does not use left out. Every field present
 * is checked, used or not (fedadagrad ignores β2, but β2 = 1.5 is still a
 * mistake worth hearing about); errors name the field.
 */
export function resolveServerOptimizer(spec: ServerOptimizerSpec): ServerOptimizerSpec {
  if (typeof spec !== 'object' || spec === null) throw new ServerOptimizerError(`server optimizer spec must be an object; got ${String(spec)}`);
  const name = spec.name;
  if (!SERVER_OPTIMIZER_NAMES.includes(name)) {
    throw new ServerOptimizerError(`server optimizer name must be one of ${SERVER_OPTIMIZER_NAMES.join(', ')}; got ${JSON.stringify(name)}`);
  }
  const eta = spec.server_learning_rate;
  checkNumber(name, 'server_learning_rate', eta);
  if (!(eta > 0)) throw new ServerOptimizerError(`${name}: server_learning_rate must be > 0; got ${eta}`);
  for (const field of ['beta1', 'beta2', 'momentum'] as const) {
    const value = spec[field];
    if (value === undefined) continue;
    checkNumber(name, field, value);
    if (!(value >= 0 && value < 1)) throw new ServerOptimizerError(`${name}: ${field} must be in [0, 1); got ${value}`);
  }
  if (spec.tau !== undefined) {
    checkNumber(name, 'tau', spec.tau);
    if (!(spec.tau > 0)) throw new ServerOptimizerError(`${name}: tau must be > 0; got ${spec.tau}`);
  }
  const resolved: ServerOptimizerSpec = { name, server_learning_rate: eta };
  for (const field of USES[name].params) resolved[field] = spec[field] ?? SERVER_OPTIMIZER_DEFAULTS[field];
  return resolved;
}

function checkNumber(name: string, field: string, value: unknown): asserts value is number {
  if (typeof value !== 'number') throw new ServerOptimizerError(`${name}: ${field} must be a number; got ${value === undefined ? 'nothing' : typeof value}`);
  if (!Number.isFinite(value)) throw new ServerOptimizerError(`${name}: ${field} must be finite; got ${value}`);
}

/**
 * One round of the server optimizer: the next global model from the current
 * one, the round's aggregate Δ and the state the previous round returned
 * (undefined before round 1). Returns the new model and the new state (fresh
 * arrays; fedavg keeps none and returns {}). Throws ServerOptimizerError (a
 * RangeError) for a bad spec, vectors of different lengths, a state another
 * optimizer left, or a non-finite value in Δ.
 */
export function applyServerOptimizer(
  spec: ServerOptimizerSpec,
  global: Float32Array,
  aggregate: Float32Array,
  state: ServerOptimizerState | undefined,
): ServerOptimizerStep {
  const s = resolveServerOptimizer(spec);
  const d = global.length;
  if (aggregate.length !== d) {
    throw new ServerOptimizerError(`global model has ${d} values but the aggregate has ${aggregate.length}`);
  }
  const prev = checkState(s.name, state, d);
  const eta = s.server_learning_rate;
  const weights = new Float32Array(d);
  switch (s.name) {
    case 'fedavg':
      checkFinite(aggregate, fedAvg(weights, global, aggregate, eta));
      return { weights, state: {} };
    case 'fedavgm': {
      const m = new Float32Array(d);
      checkFinite(aggregate, fedAvgM(weights, m, global, aggregate, prev.m ?? m, eta, s.momentum!));
      return { weights, state: { m } };
    }
    default: {
      const tau = s.tau!;
      const m = new Float32Array(d);
      const v = new Float32Array(d);
      // Round 1 reads its zero m and τ² v from the outputs themselves (same index, read before written).
      if (!prev.v) v.fill(initialV(tau));
      const mPrev = prev.m ?? m;
      const vPrev = prev.v ?? v;
      // FedAdagrad ignores β2; 0 keeps the shared loop's unused coefficient finite.
      const beta2 = s.name === 'fedadagrad' ? 0 : s.beta2!;
      const bad = adaptive(s.name, weights, m, v, global, aggregate, mPrev, vPrev, eta, s.beta1!, beta2, tau);
      checkFinite(aggregate, bad);
      return { weights, state: { m, v } };
    }
  }
}

/** v₋₁ = τ² as a float32 no smaller than τ² (Algorithm 2 asks for v₋₁ ≥ τ²). */
export function initialV(tau: number): number {
  const t2 = tau * tau;
  const f = Math.fround(t2);
  return f >= t2 ? f : nextFloat32Up(f);
}

function nextFloat32Up(x: number): number {
  // x is a non-negative float32 below the target; step its bit pattern up by one.
  const f = new Float32Array([x]);
  const bits = new Uint32Array(f.buffer);
  bits[0]! += 1;
  return f[0]!;
}

/** The state's vectors, checked against what the optimizer keeps. */
function checkState(name: ServerOptimizerName, state: ServerOptimizerState | undefined, d: number): ServerOptimizerState {
  if (state === undefined) return {};
  if (typeof state !== 'object' || state === null) throw new ServerOptimizerError(`${name}: state must be an object or undefined`);
  const keeps = USES[name].state;
  const { m, v } = state;
  for (const [field, vec] of [['m', m], ['v', v]] as const) {
    if (vec === undefined) continue;
    if (!(vec instanceof Float32Array)) throw new ServerOptimizerError(`${name}: state.${field} must be a Float32Array`);
    if (!keeps.includes(field)) {
      throw new ServerOptimizerError(`${name} keeps no ${field}, but the state has one: it was left by another server optimizer`);
    }
    if (vec.length !== d) throw new ServerOptimizerError(`state.${field} has ${vec.length} values but the global model has ${d}`);
  }
  if (keeps.length === 2 && (m === undefined) !== (v === undefined)) {
    throw new ServerOptimizerError(`${name} keeps both m and v, but the state has only ${m ? 'm' : 'v'}`);
  }
  return state;
}

/**
 * Refuses NaN and ±∞ in Δ, which would poison m and v and with them every
 * later round. The loops check each Δⱼ as they read it (Δⱼ − Δⱼ is 0 only for
 * a finite value) and stop at the first bad one, returning its index (−1: none).
 */
function checkFinite(a: Float32Array, bad: number): void {
  if (bad >= 0) throw new ServerOptimizerError(`aggregate[${bad}] is ${a[bad]}; the server optimizer needs finite values`);
}

// The loops: a single pass each, coefficients in locals, reading each input and
// writing each output once.
// x is written as g + η·step in float64 and rounded once, so η = 1 fedavg is
// float32 addition of g and Δ, bit for bit.

function fedAvg(x: Float32Array, g: Float32Array, a: Float32Array, eta: number): number {
  const n = x.length;
  for (let j = 0; j < n; j++) {
    const dj = a[j]!;
    if (dj - dj !== 0) return j;
    x[j] = g[j]! + eta * dj;
  }
  return -1;
}

function fedAvgM(x: Float32Array, m: Float32Array, g: Float32Array, a: Float32Array, mPrev: Float32Array, eta: number, beta: number): number {
  const n = x.length;
  for (let j = 0; j < n; j++) {
    const dj = a[j]!;
    if (dj - dj !== 0) return j;
    const mj = Math.fround(beta * mPrev[j]! + dj);
    m[j] = mj;
    x[j] = g[j]! + eta * mj;
  }
  return -1;
}

/**
 * FedAdagrad, FedAdam and FedYogi share everything but the second moment's
 * update, so they share this loop; `rule` is fixed for the whole pass, so the
 * branch on it is perfectly predicted.
 */
function adaptive(
  rule: 'fedadagrad' | 'fedadam' | 'fedyogi',
  x: Float32Array,
  m: Float32Array,
  v: Float32Array,
  g: Float32Array,
  a: Float32Array,
  mPrev: Float32Array,
  vPrev: Float32Array,
  eta: number,
  beta1: number,
  beta2: number,
  tau: number,
): number {
  const n = x.length;
  const c1 = 1 - beta1;
  const c2 = 1 - beta2;
  for (let j = 0; j < n; j++) {
    const dj = a[j]!;
    if (dj - dj !== 0) return j;
    const d2 = dj * dj; // exact: a float32 squared fits in float64's 53 bits
    const vp = vPrev[j]!;
    const mj = Math.fround(beta1 * mPrev[j]! + c1 * dj);
    const vj = Math.fround(
      rule === 'fedadagrad'
        ? vp + d2
        : rule === 'fedadam'
          ? beta2 * vp + c2 * d2
          : // Yogi: v moves toward Δ² by (1−β2)·Δ², and stays when v = Δ². The sign is
            // exact: a float64 difference is 0 only when its operands are equal.
            vp - c2 * d2 * Math.sign(vp - d2),
    );
    m[j] = mj;
    v[j] = vj;
    x[j] = g[j]! + (eta * mj) / (Math.sqrt(vj) + tau);
  }
  return -1;
}

// --- checkpoint encoding ----------------------------------------------------
//
// Little-endian, 12-byte header then the vectors:
//
//   offset  size  field
//   0       4     magic "CFSO" (0x43 0x46 0x53 0x4f)
//   4       1     layout version, 1
//   5       1     flags: bit 0 = m present, bit 1 = v present; other bits 0
//   6       2     reserved, 0
//   8       4     u32 d: the length of each vector present (0 when none is)
//   12      4·d   m as float32, if present
//   …       4·d   v as float32, if present
//
// The encoding of a state is unique (the replay compares checkpoints byte for
// byte) and decoding it gives back the same float32 bit patterns.

const MAGIC = [0x43, 0x46, 0x53, 0x4f] as const; // "CFSO": crowdfl server optimizer
const VERSION = 1;
const HEADER_BYTES = 12;
const HAS_M = 1;
const HAS_V = 2;
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

export function encodeServerState(state: ServerOptimizerState): Uint8Array {
  const { m, v } = state;
  const d = m?.length ?? v?.length ?? 0;
  if (m && v && m.length !== v.length) throw new ServerOptimizerError(`state.m has ${m.length} values but state.v has ${v.length}`);
  const vectors = [m, v].filter((x): x is Float32Array => x !== undefined);
  const bytes = new Uint8Array(HEADER_BYTES + 4 * d * vectors.length);
  const view = new DataView(bytes.buffer);
  MAGIC.forEach((b, i) => view.setUint8(i, b));
  view.setUint8(4, VERSION);
  view.setUint8(5, (m ? HAS_M : 0) | (v ? HAS_V : 0));
  view.setUint32(8, d, true);
  let offset = HEADER_BYTES;
  for (const vec of vectors) {
    if (LITTLE_ENDIAN) {
      bytes.set(new Uint8Array(vec.buffer, vec.byteOffset, vec.byteLength), offset);
    } else {
      for (let j = 0; j < d; j++) view.setFloat32(offset + 4 * j, vec[j]!, true);
    }
    offset += 4 * d;
  }
  return bytes;
}

/** The state `encodeServerState` wrote, for a model of `length` values; fresh arrays that do not share `bytes`. */
export function decodeServerState(bytes: Uint8Array, length: number): ServerOptimizerState {
  if (bytes.length < HEADER_BYTES) throw new ServerOptimizerError(`server state has ${bytes.length} bytes, fewer than its ${HEADER_BYTES}-byte header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (!MAGIC.every((b, i) => view.getUint8(i) === b)) throw new ServerOptimizerError('server state does not start with "CFSO"');
  const version = view.getUint8(4);
  if (version !== VERSION) throw new ServerOptimizerError(`server state layout version ${version}; this build reads ${VERSION}`);
  const flags = view.getUint8(5);
  if ((flags & ~(HAS_M | HAS_V)) !== 0 || view.getUint16(6, true) !== 0) {
    throw new ServerOptimizerError(`server state header has unknown flags (${flags}) or reserved bytes set`);
  }
  const d = view.getUint32(8, true);
  const count = (flags & HAS_M ? 1 : 0) + (flags & HAS_V ? 1 : 0);
  if (count > 0 && d !== length) throw new ServerOptimizerError(`server state vectors have ${d} values but the model has ${length}`);
  if (count === 0 && d !== 0) throw new ServerOptimizerError(`server state has no vectors but says they have ${d} values`);
  const expected = HEADER_BYTES + 4 * d * count;
  if (bytes.length !== expected) throw new ServerOptimizerError(`server state has ${bytes.length} bytes; its header says ${expected}`);
  let offset = HEADER_BYTES;
  const read = (): Float32Array => {
    const out = new Float32Array(d);
    if (LITTLE_ENDIAN) {
      // Copies through bytes, so any byteOffset (Buffers from a pool are not 4-aligned) works.
      new Uint8Array(out.buffer).set(bytes.subarray(offset, offset + 4 * d));
    } else {
      for (let j = 0; j < d; j++) out[j] = view.getFloat32(offset + 4 * j, true);
    }
    offset += 4 * d;
    return out;
  };
  const state: ServerOptimizerState = {};
  if (flags & HAS_M) state.m = read();
  if (flags & HAS_V) state.v = read();
  return state;
}

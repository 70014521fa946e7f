// The update a Byzantine node sends in place of its honest one. Pure functions:
// no I/O, no clock, randomness only from the seeded generator passed in.
//
// `honest` is the node's real delta (trained − base weights, flat). Every
// function returns a new array and leaves its inputs untouched. Arithmetic is
// done in float64 and rounded to float32 once per coordinate.
import type { Rng } from '../core/rng.js';
import type { AttackSpec, OptimisationAttackSpec } from '../aggregator/experiment/attack-schema.js';

export interface CraftContext {
  /** Seeded generator; required by gaussian-noise (e.g. `Rng.derive(seed, 'attack', nodeId, round)`). */
  rng?: Pick<Rng, 'normal'>;
  /**
   * The honest updates of all colluders this round, this node's own included,
   * as `awaitColluders` returns them (ordered by node id). Used by alie, ipm,
   * min-max and min-sum only.
   */
  colluders?: readonly Float32Array[];
  /** How many updates the aggregator combines in a round (ALIE's n). */
  n: number;
  /** How many of those are Byzantine (ALIE's f). */
  f: number;
}

export interface CraftResult {
  /** What the node uploads instead of its honest delta. */
  delta: Float32Array;
  /**
   * Set when the attack ran in a degraded way the run log should show, e.g. a
   * collusion attack that had fewer than two honest samples.
   */
  note?: string;
  /** min-max and min-sum: the γ the search settled on (the update is mean + γ·∇p). */
  gamma?: number;
}

/**
 * Replaces `honest` by the attack's update. label-flip poisons the data before
 * training, so its update is the honest one trained on flipped labels and is
 * returned unchanged (as a copy).
 */
export function craftUpdate(spec: AttackSpec, honest: Float32Array, ctx: CraftContext): CraftResult {
  switch (spec.kind) {
    case 'sign-flip':
      return { delta: scaled(honest, -spec.scale) };
    case 'scaling':
      return { delta: scaled(honest, spec.factor) };
    case 'gaussian-noise':
      return { delta: gaussianNoise(honest.length, spec.sigma, ctx.rng) };
    case 'free-ride':
      return { delta: new Float32Array(honest.length) };
    case 'label-flip':
      return { delta: Float32Array.from(honest) };
    case 'example-inflation':
      // The lie is in the claimed count (byzantine-node-main.ts declares it); the update is scale·delta.
      return { delta: scaled(honest, spec.scale) };
    case 'alie': {
      const z = spec.z ?? alieZMax(ctx.n, ctx.f);
      const { samples, note } = collusionSamples(honest, ctx.colluders);
      const { mean, std } = coordinateMoments(samples, honest.length);
      const delta = new Float32Array(honest.length);
      for (let i = 0; i < delta.length; i++) delta[i] = mean[i] - z * std[i];
      return withNote(delta, note);
    }
    case 'ipm': {
      const { samples, note } = collusionSamples(honest, ctx.colluders);
      const { mean } = coordinateMoments(samples, honest.length);
      const delta = new Float32Array(honest.length);
      for (let i = 0; i < delta.length; i++) delta[i] = -spec.epsilon * mean[i];
      return withNote(delta, note);
    }
    case 'min-max':
    case 'min-sum': {
      const { samples, note } = collusionSamples(honest, ctx.colluders);
      const found = optimisationAttack(spec, samples, honest.length);
      const notes = [note, found.note].filter((x): x is string => x !== undefined);
      return { delta: found.delta, gamma: found.gamma, ...(notes.length ? { note: notes.join('; ') } : {}) };
    }
    default: {
      const never: never = spec;
      throw new Error(`unknown attack ${(never as { kind: string }).kind}`);
    }
  }
}

/** Label flipping: y → classes − 1 − y. */
export function flipLabel(label: number, classes: number): number {
  if (!Number.isInteger(classes) || classes < 2) {
    throw new RangeError(`label flipping needs an integer number of classes ≥ 2, got ${classes}`);
  }
  if (!Number.isInteger(label) || label < 0 || label >= classes) {
    throw new RangeError(`label ${label} is not a class index in 0..${classes - 1}`);
  }
  return classes - 1 - label;
}

/** A flipped copy of a dataset's labels (`Dataset.labels` is a Uint8Array). */
export function flipLabels(labels: Uint8Array, classes: number): Uint8Array {
  const out = new Uint8Array(labels.length);
  for (let i = 0; i < labels.length; i++) out[i] = flipLabel(labels[i], classes);
  return out;
}

/**
 * ALIE's z_max (Baruch et al. 2019, §3): with s = ⌊n/2 + 1⌋ − f the number of
 * honest workers the attackers must win over to form a majority,
 * z_max = Φ⁻¹((n − s)/n). Throws when that probability is not in (0, 1): the
 * attackers already are a majority (s ≤ 0) or n is too small (s ≥ n). Call it
 * when an experiment is loaded to refuse such a configuration up front.
 */
export function alieZMax(n: number, f: number): number {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`ALIE needs n, the number of updates per round, as a positive integer; got ${n}`);
  if (!Number.isInteger(f) || f < 0 || f > n) throw new RangeError(`ALIE needs f, the number of Byzantine updates, as an integer in 0..n=${n}; got ${f}`);
  const s = Math.floor(n / 2 + 1) - f;
  const p = (n - s) / n;
  if (!(p > 0 && p < 1)) {
    throw new RangeError(
      `ALIE's z_max is undefined for n=${n}, f=${f}: s = ⌊n/2 + 1⌋ − f = ${s} gives (n − s)/n = ${p}, outside (0, 1)` +
        (s <= 0 ? ' (the attackers already are a majority)' : ' (too few workers)') +
        '; give z explicitly',
    );
  }
  return inverseNormalCdf(p);
}

// Acklam's rational approximation to the standard normal quantile: a central
// rational function in (p − ½)² and tail ones in √(−2 ln p). Relative error
// below 1.2e-9 over (0, 1), far below float32 resolution.
const A = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
const B = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
const C = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
const D = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
const P_LOW = 0.02425;

/** Horner: coefficients from the highest power down. */
function poly(coefficients: readonly number[], x: number): number {
  let r = 0;
  for (const c of coefficients) r = r * x + c;
  return r;
}

/** Φ⁻¹(p), the standard normal quantile, for 0 < p < 1 (±Infinity at 0 and 1). */
export function inverseNormalCdf(p: number): number {
  if (Number.isNaN(p) || p < 0 || p > 1) throw new RangeError(`a probability lies in [0, 1], got ${p}`);
  if (p === 0) return -Infinity;
  if (p === 1) return Infinity;
  if (p < P_LOW) {
    const q = Math.sqrt(-2 * Math.log(p));
    return poly(C, q) / (poly(D, q) * q + 1);
  }
  if (p > 1 - P_LOW) {
    const q = Math.sqrt(-2 * Math.log1p(-p));
    return -poly(C, q) / (poly(D, q) * q + 1);
  }
  const q = p - 0.5;
  const r = q * q;
  return (poly(A, r) * q) / (poly(B, r) * r + 1);
}

function scaled(v: Float32Array, k: number): Float32Array {
  const out = new Float32Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = k * v[i];
  return out;
}

function gaussianNoise(length: number, sigma: number, rng: CraftContext['rng']): Float32Array {
  if (!rng) throw new Error('the gaussian-noise attack needs ctx.rng, a seeded Rng (core/rng.ts)');
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = rng.normal(0, sigma);
  return out;
}

/**
 * The honest samples a collusion attack estimates from. Without any usable
 * colluder update the node's own honest update is the only sample.
 */
function collusionSamples(
  honest: Float32Array,
  colluders: readonly Float32Array[] | undefined,
): { samples: readonly Float32Array[]; note?: string } {
  const given = colluders ?? [];
  const usable = given.filter((c) => c.length === honest.length);
  const notes: string[] = [];
  if (usable.length < given.length) {
    notes.push(`ignored ${given.length - usable.length} colluder update(s) whose length is not ${honest.length}`);
  }
  if (usable.length === 0) {
    notes.push('no colluder updates: fell back to this node\'s own honest update as the only sample (std 0)');
    return { samples: [honest], note: notes.join('; ') };
  }
  if (usable.length === 1) notes.push('a single honest sample: std 0');
  return { samples: usable, note: notes.length ? notes.join('; ') : undefined };
}

/**
 * Per-coordinate mean and sample standard deviation (the unbiased n − 1
 * denominator; 0 for a single sample), in float64.
 */
function coordinateMoments(samples: readonly Float32Array[], length: number): { mean: Float64Array; std: Float64Array } {
  const m = samples.length;
  const mean = new Float64Array(length);
  for (const s of samples) for (let i = 0; i < length; i++) mean[i] += s[i];
  for (let i = 0; i < length; i++) mean[i] /= m;
  const std = new Float64Array(length);
  if (m > 1) {
    for (const s of samples) {
      for (let i = 0; i < length; i++) {
        const d = s[i] - mean[i];
        std[i] += d * d;
      }
    }
    for (let i = 0; i < length; i++) std[i] = Math.sqrt(std[i] / (m - 1));
  }
  return { mean, std };
}

// --- min-max and min-sum (Shejwalkar & Houmansadr, NDSS 2021) ------------------
//
// Both send ∇m = ∇b + γ·∇p, ∇b the mean of the benign updates b_1..b_m (here
// the colluders' honest updates, see collusion.ts) and ∇p a fixed perturbation
// direction, with the largest γ that keeps ∇m inside the benign cloud:
//   min-max: max_i ‖∇m − b_i‖  ≤ max_{i,j} ‖b_i − b_j‖  (no farther from any
//            benign update than the two farthest benign ones are apart);
//   min-sum: Σ_i ‖∇m − b_i‖² ≤ max_i Σ_j ‖b_i − b_j‖²  (no larger a sum of
//            squared distances than the most outlying benign update has).
// γ is found by the paper's halving search (Algorithm 1; `halvingSearch`). The
// min-sum bound is the paper's max_i; the authors' released notebooks compare
// against min_i instead, a tighter bound. Both constraints are checked on the
// float32 vector that would be sent, so the update sent satisfies its own
// constraint exactly (distances in float64).

/** Upper bound on the probes of one search; τ below float resolution would otherwise never be reached. */
const MAX_PROBES = 200;

/**
 * Algorithm 1's search for the largest γ with `feasible(γ)`: probe γ_init;
 * after each probe move by half the previous step, up if the probe was
 * feasible (remembering it as γ_succ), down if not; stop once the next probe is
 * within `tolerance` of γ_succ. Returns γ_succ (0 if no probe was feasible) and
 * whether any probe failed; if none did, γ hit the top of the searched range
 * [0, 2·γ_init). For a feasible set that is an interval [0, γ*] with
 * γ* < 2·γ_init this is a bisection: it stops with the last feasible and the
 * lowest infeasible probe at most 2·tolerance apart, so the result lies in
 * (γ* − 2·tolerance, γ*].
 */
export function halvingSearch(
  feasible: (gamma: number) => boolean,
  gammaInit: number,
  tolerance: number,
): { gamma: number; failed: boolean; probes: number } {
  if (!(gammaInit > 0 && Number.isFinite(gammaInit))) throw new RangeError(`gamma_init must be a positive finite number, got ${gammaInit}`);
  if (!(tolerance > 0)) throw new RangeError(`the γ search tolerance must be positive, got ${tolerance}`);
  let gamma = gammaInit;
  let step = gammaInit;
  let succ = 0;
  let failed = false;
  let probes = 0;
  while (Math.abs(succ - gamma) > tolerance && probes < MAX_PROBES) {
    probes++;
    if (feasible(gamma)) {
      succ = gamma;
      gamma += step / 2;
    } else {
      failed = true;
      gamma -= step / 2;
    }
    step /= 2;
  }
  return { gamma: succ, failed, probes };
}

/** Squared Euclidean distance in float64. */
function squaredDistance(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    sum += d * d;
  }
  return sum;
}

/** ∇p for the perturbation kind, from the samples' mean and std; `why` says why it is zero, if it is. */
function perturbationDirection(
  kind: OptimisationAttackSpec['perturbation'],
  mean: Float64Array,
  std: Float64Array,
): { direction: Float64Array; why?: string } {
  const direction = new Float64Array(mean.length);
  switch (kind) {
    case 'inverse-std':
      for (let i = 0; i < mean.length; i++) direction[i] = -std[i];
      break;
    case 'inverse-unit': {
      const norm = Math.sqrt(squaredDistance(mean, new Float64Array(mean.length)));
      if (norm > 0) for (let i = 0; i < mean.length; i++) direction[i] = -mean[i] / norm;
      break;
    }
    case 'inverse-sign':
      for (let i = 0; i < mean.length; i++) direction[i] = -Math.sign(mean[i]);
      break;
  }
  if (direction.some((x) => x !== 0)) return { direction };
  return { direction, why: kind === 'inverse-std' ? 'every coordinate\'s std is 0' : 'the mean is 0' };
}

/** The update min-max or min-sum sends, given the benign samples (ordered by node id). */
function optimisationAttack(
  spec: OptimisationAttackSpec,
  samples: readonly Float32Array[],
  length: number,
): { delta: Float32Array; gamma: number; note?: string } {
  const { mean, std } = coordinateMoments(samples, length);
  const { direction, why } = perturbationDirection(spec.perturbation, mean, std);
  /** ∇b + γ·∇p as it would be sent: float64, rounded to float32 once per coordinate. */
  const candidate = (gamma: number): Float32Array => {
    const out = new Float32Array(length);
    for (let i = 0; i < length; i++) out[i] = mean[i] + gamma * direction[i];
    return out;
  };
  if (samples.length < 2) return { delta: candidate(0), gamma: 0, note: 'no spread to hide in: sent the mean (γ = 0)' };
  if (why !== undefined) return { delta: candidate(0), gamma: 0, note: `∇p (${spec.perturbation}) is zero, ${why}: sent the mean (γ = 0)` };

  const m = samples.length;
  const pairwise: number[][] = samples.map(() => new Array<number>(m).fill(0));
  for (let i = 0; i < m; i++) {
    for (let j = i + 1; j < m; j++) pairwise[i][j] = pairwise[j][i] = squaredDistance(samples[i], samples[j]);
  }
  let feasible: (gamma: number) => boolean;
  if (spec.kind === 'min-max') {
    const bound = Math.max(...pairwise.map((row) => Math.max(...row)));
    feasible = (gamma) => {
      const c = candidate(gamma);
      return samples.every((b) => squaredDistance(c, b) <= bound);
    };
  } else {
    const bound = Math.max(...pairwise.map((row) => row.reduce((a, b) => a + b, 0)));
    feasible = (gamma) => {
      const c = candidate(gamma);
      let sum = 0;
      for (const b of samples) sum += squaredDistance(c, b);
      return sum <= bound;
    };
  }
  const { gamma, failed } = halvingSearch(feasible, spec.gamma_init, spec.tolerance);
  const note = failed
    ? undefined
    : `the constraint held at every γ probed, up to ${gamma} at the top of the search range [0, 2·gamma_init = ${2 * spec.gamma_init}): raise gamma_init`;
  return { delta: candidate(gamma), gamma, ...(note ? { note } : {}) };
}

function withNote(delta: Float32Array, note: string | undefined): CraftResult {
  return note === undefined ? { delta } : { delta, note };
}

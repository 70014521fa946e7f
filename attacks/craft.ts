// The update a Byzantine node sends in place of its honest one. Pure functions:
// no I/O, no clock, randomness only from the seeded generator passed in.
//
// `honest` is the node's real delta (trained − base weights, flat). Every
// function returns a new array and leaves its inputs untouched. Arithmetic is
// done in float64 and rounded to float32 once per coordinate.
import type { Rng } from '../core/rng.js';
import type { AttackSpec } from '../aggregator/experiment/attack-schema.js';

export interface CraftContext {
  /** Seeded generator; required by gaussian-noise (e.g. `Rng.derive(seed, 'attack', nodeId, round)`). */
  rng?: Pick<Rng, 'normal'>;
  /**
   * The honest updates of all colluders this round, this node's own included,
   * as `awaitColluders` returns them. Used by alie and ipm only.
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

function withNote(delta: Float32Array, note: string | undefined): CraftResult {
  return note === undefined ? { delta } : { delta, note };
}

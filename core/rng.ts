// Seeded randomness shared by data generation, partitioning, training and
// weight init. Math.random cannot be seeded, and results must reproduce on
// every machine, so everything random in crowdfl draws from an Rng.
//
// Generator: xoshiro128** (Blackman & Vigna) on 32-bit integer arithmetic,
// which JS does exactly via Math.imul and `>>> 0`, so the bit stream is the
// same everywhere. Its 128-bit state is filled from the seed by a SplitMix-style
// Weyl sequence finalised with the murmur3 mixer, so nearby seeds (1, 2, 3...)
// give unrelated streams. The floating-point transforms (log, cos, sqrt, pow)
// use V8's fdlibm port rather than the platform libm, so samples match across
// operating systems and CPUs for a given Node version.

const TWO_POW_32 = 2 ** 32;
const TWO_POW_53 = 2 ** 53;

/** murmur3's 32-bit finaliser: a bijection that spreads every input bit. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** FNV-1a over UTF-16 code units; only used to turn labels into seed material. */
function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

function checkSeed(seed: number, what: string): void {
  if (!Number.isInteger(seed)) {
    throw new RangeError(`${what} must be an integer, got ${seed}`);
  }
}

/** Anything indexable and writable by position: arrays and typed arrays. */
export interface MutableArrayLike<T> {
  readonly length: number;
  [index: number]: T;
}

export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  // Box-Muller yields normals in pairs; the second is kept for the next call.
  private spareNormal: number | undefined;

  /** `seed` is any integer; it is reduced to 32 bits (`seed >>> 0`). */
  constructor(seed: number) {
    checkSeed(seed, 'Rng seed');
    let weyl = seed >>> 0;
    const next = (): number => {
      weyl = (weyl + 0x9e3779b9) >>> 0;
      return fmix32(weyl);
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
    // The all-zero state is the one fixed point of xoshiro; fmix32 of four
    // distinct Weyl values cannot all be zero, but guard so the invariant is local.
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /**
   * An independent generator for a named purpose, e.g.
   * `Rng.derive(seed, 'weights', nodeId)`. Different labels give unrelated
   * streams from one experiment seed, so adding a new consumer of randomness
   * does not shift the draws of existing ones.
   */
  static derive(seed: number, ...labels: ReadonlyArray<string | number>): Rng {
    checkSeed(seed, 'Rng.derive seed');
    let h = fmix32((seed >>> 0) ^ 0x5bd1e995);
    for (const label of labels) {
      let part: number;
      if (typeof label === 'string') {
        part = hashString(label);
      } else {
        checkSeed(label, 'Rng.derive label');
        part = label >>> 0;
      }
      h = fmix32((h ^ part) + 0x9e3779b9);
    }
    return new Rng(h | 0);
  }

  /** Next raw 32-bit output, uniform on [0, 2^32). */
  uint32(): number {
    const s0 = this.s0;
    const s1 = this.s1;
    const s2 = this.s2;
    const s3 = this.s3;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    let n2 = s2 ^ s0;
    let n3 = s3 ^ s1;
    const n1 = s1 ^ n2;
    const n0 = s0 ^ n3;
    n2 ^= t;
    n3 = rotl(n3, 11);
    this.s0 = n0 >>> 0;
    this.s1 = n1 >>> 0;
    this.s2 = n2 >>> 0;
    this.s3 = n3 >>> 0;
    return result;
  }

  /** Uniform on [0, 1) with full 53-bit double resolution. */
  uniform(): number {
    const hi = this.uint32() >>> 5; // 27 bits
    const lo = this.uint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / TWO_POW_53;
  }

  /** Uniform integer in [0, n), without modulo bias. `n` must be in 1..2^32. */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_POW_32) {
      throw new RangeError(`Rng.int needs an integer n in 1..2^32, got ${n}`);
    }
    // Reject the top partial block of 2^32 so every residue is equally likely.
    const limit = TWO_POW_32 - (TWO_POW_32 % n);
    let x = this.uint32();
    while (x >= limit) x = this.uint32();
    return x % n;
  }

  /** Normal(mean, std²) by the Box-Muller transform. */
  normal(mean = 0, std = 1): number {
    let z: number;
    if (this.spareNormal !== undefined) {
      z = this.spareNormal;
      this.spareNormal = undefined;
    } else {
      // 1 - u lies in (0, 1], keeping log finite.
      const r = Math.sqrt(-2 * Math.log(1 - this.uniform()));
      const theta = 2 * Math.PI * this.uniform();
      z = r * Math.cos(theta);
      this.spareNormal = r * Math.sin(theta);
    }
    return mean + std * z;
  }

  /** exp(Normal(mu, sigma²)). */
  lognormal(mu = 0, sigma = 1): number {
    return Math.exp(this.normal(mu, sigma));
  }

  /** Gamma(shape, scale) with mean shape·scale. */
  gamma(shape: number, scale = 1): number {
    return Math.exp(this.logGamma(shape)) * scale;
  }

  /**
   * A point on the probability simplex drawn from Dirichlet(alphas).
   * Works in log space: for alphas well below 1 the individual Gamma draws
   * underflow to 0, which would otherwise turn into 0/0.
   */
  dirichlet(alphas: ArrayLike<number>): Float64Array {
    const k = alphas.length;
    if (k === 0) throw new RangeError('Rng.dirichlet needs at least one alpha');
    const out = new Float64Array(k);
    let max = -Infinity;
    for (let i = 0; i < k; i++) {
      out[i] = this.logGamma(alphas[i]);
      if (out[i] > max) max = out[i];
    }
    let sum = 0;
    for (let i = 0; i < k; i++) {
      out[i] = Math.exp(out[i] - max);
      sum += out[i];
    }
    for (let i = 0; i < k; i++) out[i] /= sum;
    return out;
  }

  /** Fisher-Yates shuffle in place; returns its argument. */
  shuffle<A extends MutableArrayLike<unknown>>(array: A): A {
    for (let i = array.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = array[i];
      array[i] = array[j];
      array[j] = tmp;
    }
    return array;
  }

  /** A uniformly random permutation of 0..n-1. */
  permutation(n: number): Uint32Array {
    const p = new Uint32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    return this.shuffle(p);
  }

  /** log of a Gamma(shape, 1) draw (Marsaglia & Tsang 2000). */
  private logGamma(shape: number): number {
    if (!(shape > 0) || !Number.isFinite(shape)) {
      throw new RangeError(`Gamma shape must be a positive finite number, got ${shape}`);
    }
    if (shape < 1) {
      // Boost: Gamma(a) = Gamma(a + 1) · U^(1/a). Kept in log space because
      // U^(1/a) underflows for small a.
      return this.logGamma(shape + 1) + Math.log(1 - this.uniform()) / shape;
    }
    const d = shape - 1 / 3;
    const c = 1 / Math.sqrt(9 * d);
    for (;;) {
      let x: number;
      let v: number;
      do {
        x = this.normal();
        v = 1 + c * x;
      } while (v <= 0);
      v = v * v * v;
      const u = this.uniform();
      const x2 = x * x;
      // Cheap squeeze first; the exact log test only for the rare remainder.
      if (u < 1 - 0.0331 * x2 * x2) return Math.log(d * v);
      if (Math.log(u) < 0.5 * x2 + d * (1 - v + Math.log(v))) return Math.log(d * v);
    }
  }
}

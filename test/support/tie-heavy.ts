// Seeded test updates for the coordinate-wise kernels: small integers (ties),
// ±0 and spread floats, the inputs where rank selection and tie handling can go wrong.

/** xorshift32 in [0, 1): fast, seeded, and the same on every machine. */
function xorshift(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

/** n updates of d values: `tieShare` small integers, 5% ±0, the rest spread over ±100; on a SharedArrayBuffer when `shared`. */
export function tieHeavyUpdates(n: number, d: number, seed: number, o: { tieShare?: number; shared?: boolean } = {}): Float32Array[] {
  const next = xorshift(seed);
  const tieShare = o.tieShare ?? 0.3;
  return Array.from({ length: n }, () => {
    const u = new Float32Array(o.shared ? new SharedArrayBuffer(4 * d) : new ArrayBuffer(4 * d));
    for (let j = 0; j < d; j++) {
      const r = next();
      u[j] = r < tieShare ? Math.floor(next() * 5) - 2 : r < tieShare + 0.05 ? (next() < 0.5 ? -0 : 0) : (next() - 0.5) * 200;
    }
    return u;
  });
}

// Numbers in verdict reasons: short, and never "100%" for 99.96%.

/** A fraction as a percentage: 0%, 0.042%, 3.1%, 96%, 99.96%, 100%. */
export function percent(x: number): string {
  const p = 100 * x;
  if (p === 0 || p === 100 || !Number.isFinite(p)) return `${p}%`;
  if (p > 99.5) return `${p.toFixed(2)}%`;
  if (p >= 10) return `${p.toFixed(0)}%`;
  if (p >= 0.1) return `${p.toFixed(1)}%`;
  return `${p.toPrecision(2)}%`;
}

/** A measured quantity to 4 significant digits: 123.4, 0.01234, 1.235e+9. */
export function num(x: number): string {
  if (x === 0 || !Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a >= 1e7 || a < 1e-4) return x.toExponential(3);
  return String(Number(x.toPrecision(4)));
}

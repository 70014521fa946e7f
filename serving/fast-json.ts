// A parser for the one body shape nearly every predict request has:
// {"instances": [[n, n, ...], ...]} (or "inputs"), each instance a flat list of
// numbers. It reads the bytes straight into Float32Arrays, skipping the JS
// arrays of boxed numbers JSON.parse would build and the walk that copies them
// out. Anything else (nesting, other keys, strings, a wrong count, invalid
// JSON) returns undefined and the request goes through JSON.parse and the full
// validation, whose error messages name the problem; so this file never has to
// explain an error, only recognise the common case exactly.

const SPACE = 0x20, TAB = 0x09, LF = 0x0a, CR = 0x0d;
const QUOTE = 0x22, COMMA = 0x2c, MINUS = 0x2d, PLUS = 0x2b, DOT = 0x2e, COLON = 0x3a;
const OPEN_BRACKET = 0x5b, CLOSE_BRACKET = 0x5d, OPEN_BRACE = 0x7b, CLOSE_BRACE = 0x7d;
const ZERO = 0x30, NINE = 0x39, LOWER_E = 0x65, UPPER_E = 0x45;

/** Exact powers of ten: a mantissa below 2^53 times or over one of these rounds once, as JSON.parse does. */
const POW10 = Array.from({ length: 23 }, (_, i) => Number(`1e${i}`));

export interface FastParse {
  rows: Float32Array[];
  columnar: boolean;
}

export function parseInstancesFast(bytes: Uint8Array, inputSize: number): FastParse | undefined {
  let i = 0;
  const n = bytes.length;
  const skip = (): void => {
    while (i < n) {
      const c = bytes[i];
      if (c !== SPACE && c !== LF && c !== CR && c !== TAB) return;
      i++;
    }
  };
  const expect = (c: number): boolean => {
    skip();
    if (bytes[i] !== c) return false;
    i++;
    return true;
  };
  /** One JSON number at i, or NaN when the text there is not one. */
  const number = (): number => {
    const start = i;
    let negative = false;
    if (bytes[i] === MINUS) {
      negative = true;
      i++;
    }
    let mantissa = 0;
    let digits = 0;
    let scale = 0;
    const intStart = i;
    while (i < n && bytes[i] >= ZERO && bytes[i] <= NINE) {
      mantissa = mantissa * 10 + (bytes[i] - ZERO);
      digits++;
      i++;
    }
    if (digits === 0 || (bytes[intStart] === ZERO && digits > 1)) return Number.NaN;
    if (bytes[i] === DOT) {
      i++;
      const fracStart = i;
      while (i < n && bytes[i] >= ZERO && bytes[i] <= NINE) {
        mantissa = mantissa * 10 + (bytes[i] - ZERO);
        digits++;
        i++;
      }
      if (i === fracStart) return Number.NaN;
      scale = fracStart - i;
    }
    if (bytes[i] === LOWER_E || bytes[i] === UPPER_E) {
      i++;
      let expNegative = false;
      if (bytes[i] === MINUS || bytes[i] === PLUS) {
        expNegative = bytes[i] === MINUS;
        i++;
      }
      const expStart = i;
      let exp = 0;
      while (i < n && bytes[i] >= ZERO && bytes[i] <= NINE && i - expStart < 6) {
        exp = exp * 10 + (bytes[i] - ZERO);
        i++;
      }
      if (i === expStart) return Number.NaN;
      scale += expNegative ? -exp : exp;
    }
    let value: number;
    if (digits <= 15 && scale >= -22 && scale <= 22) {
      value = scale < 0 ? mantissa / POW10[-scale] : mantissa * POW10[scale];
    } else {
      // Rare: too many digits to be exact in a double; let the engine round it.
      value = Number(String.fromCharCode(...bytes.subarray(negative ? start + 1 : start, i)));
    }
    return negative ? -value : value;
  };

  if (!expect(OPEN_BRACE)) return undefined;
  skip();
  if (bytes[i] !== QUOTE) return undefined;
  const keyStart = ++i;
  while (i < n && bytes[i] !== QUOTE) i++;
  const key = String.fromCharCode(...bytes.subarray(keyStart, i));
  i++;
  if (key !== 'instances' && key !== 'inputs') return undefined;
  if (!expect(COLON) || !expect(OPEN_BRACKET)) return undefined;
  const rows: Float32Array[] = [];
  skip();
  if (bytes[i] === CLOSE_BRACKET) return undefined; // empty: the slow path says so
  for (;;) {
    if (!expect(OPEN_BRACKET)) return undefined;
    const row = new Float32Array(inputSize);
    for (let k = 0; ; k++) {
      skip();
      if (k >= inputSize) return undefined;
      const v = number();
      if (Number.isNaN(v)) return undefined;
      row[k] = v;
      skip();
      if (bytes[i] === COMMA) {
        i++;
        continue;
      }
      if (bytes[i] !== CLOSE_BRACKET || k !== inputSize - 1) return undefined;
      i++;
      break;
    }
    rows.push(row);
    skip();
    if (bytes[i] === COMMA) {
      i++;
      continue;
    }
    if (bytes[i] !== CLOSE_BRACKET) return undefined;
    i++;
    break;
  }
  if (!expect(CLOSE_BRACE)) return undefined;
  skip();
  return i === n ? { rows, columnar: key === 'inputs' } : undefined;
}

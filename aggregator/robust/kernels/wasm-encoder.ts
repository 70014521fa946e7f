// A minimal WebAssembly binary writer (one module, one imported memory, one
// exported function) and the one linear memory its kernels share. Enough for kernels whose code is generated at run time
// from a comparator list (rank-window.ts), where a module assembled ahead of
// time would have to interpret the network instead of running it as
// straight-line code.
//
// Only the instructions those kernels use are here; see the WebAssembly core
// specification (binary format) and its SIMD proposal for the encodings.

export type Valtype = 'i32' | 'v128';

const VALTYPE: Record<Valtype, number> = { i32: 0x7f, v128: 0x7b };

/** Opcodes after the 0xfd prefix. */
export const SIMD = {
  'v128.load': 0x00,
  'v128.load64_splat': 0x0a,
  'v128.store': 0x0b,
  'v128.const': 0x0c,
  'i8x16.shuffle': 0x0d,
  'i32x4.splat': 0x11,
  'f32x4.splat': 0x13,
  'f64x2.splat': 0x14,
  'i32x4.ne': 0x38,
  'i32x4.lt_s': 0x39,
  'f32x4.le': 0x45,
  'f32x4.ge': 0x46,
  'v128.and': 0x4e,
  'v128.bitselect': 0x52,
  'v128.any_true': 0x53,
  'f32x4.demote_f64x2_zero': 0x5e,
  'f64x2.promote_low_f32x4': 0x5f,
  'i32x4.bitmask': 0xa4,
  'i32x4.add': 0xae,
  'i32x4.sub': 0xb1,
  'f32x4.add': 0xe4,
  'f32x4.pmin': 0xea,
  'f32x4.pmax': 0xeb,
  'f64x2.add': 0xf0,
  'f64x2.mul': 0xf2,
  'f64x2.div': 0xf3,
} as const;

export type SimdOp = keyof typeof SIMD;

/** Plain (unprefixed) opcodes. */
export const OP = {
  block: 0x02,
  loop: 0x03,
  if: 0x04,
  end: 0x0b,
  br: 0x0c,
  br_if: 0x0d,
  'local.get': 0x20,
  'local.set': 0x21,
  'local.tee': 0x22,
  'i32.store': 0x36,
  'i32.const': 0x41,
  'i32.eqz': 0x45,
  'i32.lt_s': 0x48,
  'i32.ge_s': 0x4e,
  'i32.add': 0x6a,
  'i32.sub': 0x6b,
  'i32.and': 0x71,
  'i32.shl': 0x74,
  'i32.shr_u': 0x76,
} as const;

export type PlainOp = keyof typeof OP;

function uleb(out: number[], value: number): void {
  let v = value >>> 0;
  do {
    let byte = v & 0x7f;
    v >>>= 7;
    if (v !== 0) byte |= 0x80;
    out.push(byte);
  } while (v !== 0);
}

function sleb(out: number[], value: number): void {
  let v = value | 0;
  for (;;) {
    const byte = v & 0x7f;
    v >>= 7;
    const done = (v === 0 && (byte & 0x40) === 0) || (v === -1 && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return;
  }
}

/** Builds one function body. Locals are numbered after the parameters, in the order they are added. */
export class FunctionBuilder {
  private readonly code: number[] = [];
  private readonly locals: Valtype[] = [];

  constructor(readonly params: readonly Valtype[], readonly results: readonly Valtype[]) {}

  local(type: Valtype): number {
    this.locals.push(type);
    return this.params.length + this.locals.length - 1;
  }

  op(name: PlainOp): this {
    this.code.push(OP[name]);
    if (name === 'block' || name === 'loop' || name === 'if') this.code.push(0x40); // no block result
    return this;
  }

  get(index: number): this {
    this.code.push(OP['local.get']);
    uleb(this.code, index);
    return this;
  }

  set(index: number): this {
    this.code.push(OP['local.set']);
    uleb(this.code, index);
    return this;
  }

  tee(index: number): this {
    this.code.push(OP['local.tee']);
    uleb(this.code, index);
    return this;
  }

  /** br / br_if to the enclosing block `depth` levels out. */
  branch(name: 'br' | 'br_if', depth: number): this {
    this.code.push(OP[name]);
    uleb(this.code, depth);
    return this;
  }

  i32(value: number): this {
    this.code.push(OP['i32.const']);
    sleb(this.code, value);
    return this;
  }

  /** i32.store with a constant byte offset (address from the stack). */
  storeI32(offset: number): this {
    this.code.push(OP['i32.store'], 2);
    uleb(this.code, offset);
    return this;
  }

  simd(name: SimdOp): this {
    this.code.push(0xfd);
    uleb(this.code, SIMD[name]);
    return this;
  }

  /** v128.load / v128.store with a constant byte offset; the address operand is i32. */
  memory(name: 'v128.load' | 'v128.store', offset: number): this {
    this.simd(name);
    // Alignment hint 2^4: every v128 the kernels touch is 16-byte aligned.
    this.code.push(4);
    uleb(this.code, offset);
    return this;
  }

  /** v128.load64_splat with a constant byte offset: one float64 into both lanes. */
  load64Splat(offset: number): this {
    this.simd('v128.load64_splat');
    this.code.push(3); // 8-byte aligned
    uleb(this.code, offset);
    return this;
  }

  v128(bytes: Uint8Array): this {
    if (bytes.length !== 16) throw new RangeError('v128.const takes 16 bytes');
    this.simd('v128.const');
    append(this.code, bytes);
    return this;
  }

  shuffle(lanes: readonly number[]): this {
    if (lanes.length !== 16) throw new RangeError('i8x16.shuffle takes 16 lane indices');
    this.simd('i8x16.shuffle');
    append(this.code, lanes);
    return this;
  }

  /** The function's body: local declarations, code, end. */
  body(): number[] {
    const out: number[] = [];
    // Local declarations as runs of one type.
    const runs: [number, Valtype][] = [];
    for (const t of this.locals) {
      const last = runs[runs.length - 1];
      if (last !== undefined && last[1] === t) last[0]++;
      else runs.push([1, t]);
    }
    uleb(out, runs.length);
    for (const [count, t] of runs) {
      uleb(out, count);
      out.push(VALTYPE[t]);
    }
    append(out, this.code);
    out.push(OP.end);
    return out;
  }
}

/** out.push(...items) without the argument-count limit of a spread. */
function append(out: number[], items: readonly number[] | Uint8Array): void {
  for (let k = 0; k < items.length; k++) out.push(items[k]!);
}

function section(out: number[], id: number, content: number[]): void {
  out.push(id);
  uleb(out, content.length);
  append(out, content);
}

function name(out: number[], s: string): void {
  const bytes = new TextEncoder().encode(s);
  uleb(out, bytes.length);
  append(out, bytes);
}

/** A module that imports memory `env.memory` (at least `minPages` pages) and exports `fn` as `run`. */
export function moduleBytes(fn: FunctionBuilder, minPages: number): Uint8Array {
  const out = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

  const types: number[] = [];
  uleb(types, 1);
  types.push(0x60);
  uleb(types, fn.params.length);
  for (const p of fn.params) types.push(VALTYPE[p]);
  uleb(types, fn.results.length);
  for (const r of fn.results) types.push(VALTYPE[r]);
  section(out, 1, types);

  const imports: number[] = [];
  uleb(imports, 1);
  name(imports, 'env');
  name(imports, 'memory');
  imports.push(0x02, 0x00); // memory, limits without a maximum
  uleb(imports, minPages);
  section(out, 2, imports);

  const funcs: number[] = [];
  uleb(funcs, 1);
  uleb(funcs, 0);
  section(out, 3, funcs);

  const exports: number[] = [];
  uleb(exports, 1);
  name(exports, 'run');
  exports.push(0x00); // function
  uleb(exports, 0);
  section(out, 7, exports);

  const code: number[] = [];
  uleb(code, 1);
  const body = fn.body();
  uleb(code, body.length);
  append(code, body);
  section(out, 10, code);

  return Uint8Array.from(out);
}

// ---------------------------------------------------------------------------
// Running the modules.

// The project compiles against lib ES2022 and @types/node 20, neither of
// which declares WebAssembly: just the parts used here.
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
}

interface WasmApi {
  readonly Memory: new (descriptor: { initial: number }) => WasmMemory;
  readonly Module: new (bytes: Uint8Array) => object;
  readonly Instance: new (module: object, imports: object) => { readonly exports: Record<string, unknown> };
  validate(bytes: Uint8Array): boolean;
}

export const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

const PAGE = 65536;

export function pagesFor(bytes: number): number {
  return Math.max(1, Math.ceil(bytes / PAGE));
}

/** 1 MiB: every kernel layout up to n ≈ 2,000 updates fits, so one memory serves them all. */
const INITIAL_PAGES = 16;

// One memory shared by the kernels (their calls are synchronous and never
// nested), replaced by a new, larger one when a kernel needs more, never
// grown: growing a memory detaches its old ArrayBuffer, and after the first
// detach in a process V8 can no longer assume typed arrays stay attached, so
// every optimized typed-array loop (the JS kernels included) pays for checks;
// measured, the JS weighted sum at n = 100 went from 153 to 192 ms after one
// memory.grow.
let memory = new wasm.Memory({ initial: INITIAL_PAGES });

/** A compiled kernel: its `run` export and the memory it was instantiated with (take views of that memory's buffer). */
export interface Kernel {
  readonly run: (...args: number[]) => number;
  readonly memory: WasmMemory;
}

/** Compiles a module from `moduleBytes` against a memory of at least `needed` bytes. */
export function instantiate(bytes: Uint8Array, needed: number): Kernel {
  if (pagesFor(needed) > memory.buffer.byteLength / PAGE) memory = new wasm.Memory({ initial: pagesFor(needed) });
  const instance = new wasm.Instance(new wasm.Module(bytes), { env: { memory } });
  return { run: instance.exports['run'] as (...args: number[]) => number, memory };
}

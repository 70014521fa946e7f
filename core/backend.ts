// Choosing the tfjs backend a process computes on. Volunteers' machines differ:
// the native TensorFlow binding is fastest but is an optional install (and the
// GPU build needs CUDA), WebAssembly runs everywhere Node does, and the pure-JS
// 'cpu' backend is the slow fallback that implements every kernel.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { layerSummary, type ModelSpec } from './model/spec.js';
import { registerWasmTrainingKernels } from './tfjs-wasm-kernels.js';

/** Which backend a process asks for; `auto` takes the fastest that loads. */
export const backendPreferenceSchema = z.enum(['auto', 'tensorflow', 'tensorflow-gpu', 'wasm', 'cpu']);
export type BackendPreference = z.infer<typeof backendPreferenceSchema>;

/**
 * How far two runs' accuracies may differ and still agree when they computed on different backends:
 * wasm and cpu round differently, which can flip a few test predictions a round (`crowdfl rerun`'s default).
 */
export const DEFAULT_CROSS_BACKEND_TOLERANCE = 0.02;

export interface BackendOptions {
  log?: (msg: string) => void;
}

export class BackendError extends Error {
  override name = 'BackendError';
}

const require = createRequire(import.meta.url);

type NativePackage = '@tensorflow/tfjs-node' | '@tensorflow/tfjs-node-gpu';

const NATIVE_HELP: Record<NativePackage, string> = {
  '@tensorflow/tfjs-node': `npm install @tensorflow/tfjs-node@${tf.version.tfjs} (prebuilt for Linux, macOS and Windows on x64; other platforms build from source)`,
  '@tensorflow/tfjs-node-gpu': `npm install @tensorflow/tfjs-node-gpu@${tf.version.tfjs}; needs Linux x64 with an NVIDIA GPU, CUDA 11.2 and cuDNN 8.1`,
};

/** The native package this process loaded; the two cannot coexist, both register 'tensorflow'. */
let nativeLoaded: { pkg: NativePackage; versions: Record<string, string> } | undefined;
let wasmVersion: string | undefined;
let wasmPathsConfigured = false;

function defaultLog(msg: string): void {
  console.error(`[crowdfl backend] ${msg}`);
}

function errorText(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  // Native load errors carry multi-line dlopen output; the first line says enough.
  return msg.split('\n')[0] ?? msg;
}

function isInstalled(pkg: string): boolean {
  try {
    require.resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

/** Loads a native TensorFlow binding; resolves to why it could not, or undefined on success. */
async function loadNative(pkg: NativePackage): Promise<string | undefined> {
  if (nativeLoaded) {
    return nativeLoaded.pkg === pkg ? undefined : `${nativeLoaded.pkg} is already loaded in this process`;
  }
  if (!isInstalled(pkg)) return `${pkg} is not installed`;
  try {
    // A variable specifier keeps TypeScript from requiring the optional package at build time.
    const specifier: string = pkg;
    const mod = (await import(specifier)) as { version?: unknown };
    const versions: Record<string, string> = {};
    if (typeof mod.version === 'object' && mod.version !== null) {
      for (const [k, v] of Object.entries(mod.version)) versions[k] = String(v);
    }
    if (!tf.findBackendFactory('tensorflow')) {
      // It registered with a different copy of tfjs-core than the one crowdfl uses.
      return `${pkg} loaded but its version does not match @tensorflow/tfjs ${tf.version.tfjs}; ${NATIVE_HELP[pkg]}`;
    }
    nativeLoaded = { pkg, versions };
    return undefined;
  } catch (err) {
    return `${pkg} is installed but failed to load: ${errorText(err)}`;
  }
}

async function loadWasm(): Promise<string | undefined> {
  try {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    wasmVersion = wasm.version_wasm;
    if (!wasmPathsConfigured) {
      wasmPathsConfigured = true;
      // Node's build finds the .wasm files next to its own script; naming the
      // directory explicitly keeps that working when crowdfl itself is bundled.
      try {
        wasm.setWasmPaths(join(dirname(require.resolve('@tensorflow/tfjs-backend-wasm')), '/'));
      } catch {
        // Not resolvable from here (bundled without node_modules): keep the default lookup.
      }
    }
    registerWasmTrainingKernels();
    return undefined;
  } catch (err) {
    return `@tensorflow/tfjs-backend-wasm failed to load: ${errorText(err)}`;
  }
}

/** tf.setBackend logs and returns false when a backend's initialisation fails; turn that into a reason. */
async function activate(name: string): Promise<string | undefined> {
  try {
    const ok = await tf.setBackend(name);
    return ok ? undefined : `the ${name} backend failed to initialise`;
  } catch (err) {
    return `the ${name} backend failed to initialise: ${errorText(err)}`;
  }
}

async function tryNative(pkg: NativePackage): Promise<string | undefined> {
  return (await loadNative(pkg)) ?? (await activate('tensorflow'));
}

async function tryWasm(): Promise<string | undefined> {
  return (await loadWasm()) ?? (await activate('wasm'));
}

/**
 * Selects the tfjs backend for this process and resolves to its name as tfjs
 * knows it ('tensorflow', 'wasm' or 'cpu'). 'auto' takes the fastest that
 * loads; an explicit preference that cannot load throws a BackendError that
 * says how to fix it.
 */
export function initBackend(pref: BackendPreference, opts: BackendOptions = {}): Promise<string> {
  // Two callers in one process (tests start several aggregators at once) must not
  // interleave backend switches: one would build tensors on a backend the other
  // is leaving. Calls run one at a time, and a choice already in force is kept.
  const run = initQueue.then(async () => {
    const earlier = chosen.get(pref);
    if (earlier !== undefined && tf.getBackend() === earlier) return earlier;
    const name = await selectBackend(pref, opts);
    chosen.set(pref, name);
    return name;
  });
  initQueue = run.catch(() => undefined);
  return run;
}

let initQueue: Promise<unknown> = Promise.resolve();
const chosen = new Map<BackendPreference, string>();

async function selectBackend(pref: BackendPreference, opts: BackendOptions): Promise<string> {
  const log = opts.log ?? defaultLog;
  switch (pref) {
    case 'tensorflow':
    case 'tensorflow-gpu': {
      const pkg: NativePackage = pref === 'tensorflow' ? '@tensorflow/tfjs-node' : '@tensorflow/tfjs-node-gpu';
      const why = await tryNative(pkg);
      if (why) throw new BackendError(`backend ${pref} is unavailable: ${why}. To use it: ${NATIVE_HELP[pkg]}; or choose backend "auto"`);
      log(`using the native TensorFlow backend (${pkg})`);
      return tf.getBackend();
    }
    case 'wasm': {
      const why = await tryWasm();
      if (why) throw new BackendError(`backend wasm is unavailable: ${why}. Reinstall with npm install @tensorflow/tfjs-backend-wasm@${tf.version.tfjs}, or choose backend "cpu"`);
      log('using the WebAssembly backend (wasm), as configured');
      return tf.getBackend();
    }
    case 'cpu': {
      const why = await activate('cpu');
      if (why) throw new BackendError(why);
      log('using the pure-JavaScript cpu backend, as configured (slow; prefer "auto")');
      return tf.getBackend();
    }
    case 'auto': {
      const skipped: string[] = [];
      // The GPU build first: someone who installed it wants it. Missing packages cost one failed resolve.
      for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const) {
        const why = await tryNative(pkg);
        if (!why) {
          log(`using the native TensorFlow backend (${pkg})${skipped.length ? `; ${skipped.join('; ')}` : ''}`);
          return tf.getBackend();
        }
        skipped.push(why);
      }
      const wasmWhy = await tryWasm();
      if (!wasmWhy) {
        log(`using the WebAssembly backend (wasm): ${skipped.join('; ')}; for native speed: ${NATIVE_HELP['@tensorflow/tfjs-node']}`);
        return tf.getBackend();
      }
      skipped.push(wasmWhy);
      const cpuWhy = await activate('cpu');
      if (cpuWhy) throw new BackendError(`no tfjs backend could start: ${[...skipped, cpuWhy].join('; ')}`);
      log(`using the pure-JavaScript cpu backend (slow): ${skipped.join('; ')}`);
      return tf.getBackend();
    }
    default: {
      const unknown: never = pref;
      throw new BackendError(`unknown backend preference ${String(unknown)}; choose auto, tensorflow, tensorflow-gpu, wasm or cpu`);
    }
  }
}

// Kernels (tfjs kernel names) that one training step runs, forward and
// backward, per layer class and activation. A backend missing any of them
// fails mid-training with "kernel X not registered", which is what
// missingTrainingKernels predicts up front. Both fused and unfused forms are
// listed because tfjs picks between them depending on gradient depth.
const LAYER_KERNELS: Record<string, readonly string[]> = {
  InputLayer: [],
  // Transpose: trainer/training/dense-step.ts keeps Dense stacks' activations feature-major.
  Dense: ['BatchMatMul', '_FusedMatMul', 'Add', 'Sum', 'Reshape', 'Transpose'],
  Conv2D: ['Conv2D', 'FusedConv2D', 'Conv2DBackpropInput', 'Conv2DBackpropFilter', 'Add', 'Sum', 'Reshape'],
  MaxPooling2D: ['MaxPool', 'MaxPoolGrad'],
  AveragePooling2D: ['AvgPool', 'AvgPoolGrad'],
  Flatten: ['Reshape'],
  Reshape: ['Reshape'],
  Dropout: ['Floor', 'Add', 'Cast', 'Multiply', 'RealDiv'],
  Activation: [],
};

const ACTIVATION_KERNELS: Record<string, readonly string[]> = {
  linear: [],
  relu: ['Relu', 'Step', 'Cast', 'Multiply'],
  sigmoid: ['Sigmoid', 'Multiply', 'Sub'],
  tanh: ['Tanh', 'Square', 'Sub', 'Multiply'],
  softmax: ['Softmax', 'Multiply', 'Sum', 'Sub'],
};

// Loss (softmax cross-entropy of logits, or clipped log of probabilities, with
// their gradients), the accuracy count, and the SGD update.
const TRAINING_LOOP_KERNELS: readonly string[] = [
  'Max', 'Sub', 'Exp', 'Sum', 'Log', 'Reshape', 'Add', 'Cast', 'Multiply', 'Neg', 'RealDiv', 'Mean',
  'ClipByValue', 'GreaterEqual', 'LessEqual', 'LogicalAnd', 'ZerosLike', 'Select',
  'ArgMax', 'Equal', 'Identity',
];

/** Every kernel training `spec` needs, forward and backward. */
export function trainingKernels(spec: ModelSpec): string[] {
  const needed = new Set<string>(TRAINING_LOOP_KERNELS);
  for (const layer of layerSummary(spec)) {
    for (const k of LAYER_KERNELS[layer.className] ?? []) needed.add(k);
    for (const k of ACTIVATION_KERNELS[layer.activation ?? 'linear'] ?? []) needed.add(k);
  }
  return [...needed].sort();
}

/** The kernels training `spec` needs that `backendName` does not register. */
export function missingTrainingKernels(spec: ModelSpec, backendName: string): string[] {
  return trainingKernels(spec).filter((k) => tf.getKernel(k, backendName) === undefined);
}

// Fastest first. 'cpu' implements every kernel, so a search always ends somewhere.
const FALLBACK_ORDER = ['tensorflow', 'wasm', 'cpu'];

/**
 * Makes sure the current backend can train `spec`. If it lacks a kernel,
 * switches to the fastest registered backend that has them all and logs why;
 * never throws for a missing kernel. Resolves to the backend in use.
 */
export async function ensureBackendFor(spec: ModelSpec, opts: BackendOptions = {}): Promise<string> {
  const log = opts.log ?? defaultLog;
  const current = tf.getBackend();
  const missing = missingTrainingKernels(spec, current);
  if (missing.length === 0) return current;
  const registered = Object.keys(tf.engine().registryFactory);
  for (const candidate of FALLBACK_ORDER) {
    if (candidate === current || !registered.includes(candidate)) continue;
    if (missingTrainingKernels(spec, candidate).length > 0) continue;
    const why = await activate(candidate);
    if (why) {
      log(`cannot switch to ${candidate}: ${why}`);
      continue;
    }
    log(
      `backend ${current} lacks kernel${missing.length > 1 ? 's' : ''} ${missing.join(', ')} needed to train ${spec.name}; ` +
        `training on ${candidate} instead (slower)`,
    );
    return candidate;
  }
  log(`backend ${current} lacks ${missing.join(', ')} needed to train ${spec.name} and no other backend has them; staying on ${current}`);
  return current;
}

/** Versions of tfjs and of whichever backend packages this process loaded. */
export function backendVersions(): Record<string, string> {
  const versions: Record<string, string> = {};
  for (const [pkg, v] of Object.entries(tf.version)) versions[pkg] = String(v);
  if (wasmVersion) versions['tfjs-backend-wasm'] = wasmVersion;
  if (nativeLoaded) {
    for (const [k, v] of Object.entries(nativeLoaded.versions)) versions[k] = v;
    versions[nativeLoaded.pkg.replace('@tensorflow/', '')] ??= nativeLoaded.versions['tfjs-node'] ?? 'loaded';
  }
  return versions;
}

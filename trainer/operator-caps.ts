// The operator's caps on what a task may ask of this machine (NodeConfig.caps).
// The caps the aggregator can check itself travel in Hello (NodeLimits), so it
// does not offer such tasks at all; this module is the node's own check of
// every cap before it trains, and the source of the reason it declines with.
import type { NodeLimits } from '../proto/generated/crowdfl/v1/NodeLimits.js';
import type { Caps } from './node-config.js';

const MiB = 1024 * 1024;

/**
 * Copies of the weights alive while a task trains: the downloaded base, the
 * model's variables, their gradients, the optimizer's step, the delta and its
 * upload bytes.
 */
const WEIGHT_COPIES = 6;
/** Per activation value of a batch: the forward value, its gradient and one temporary. */
const ACTIVATION_COPIES = 3;

export function limitsForHello(caps: Caps): NodeLimits {
  return {
    max_parameters: caps.max_parameters ?? 0,
    max_model_bytes: caps.max_model_mb !== undefined ? Math.floor(caps.max_model_mb * MiB) : 0,
    max_examples_per_task: caps.max_examples_per_task ?? 0,
    max_task_seconds: caps.max_task_seconds !== undefined ? Math.ceil(caps.max_task_seconds) : 0,
    max_memory_bytes: caps.memory_mb !== undefined ? Math.floor(caps.memory_mb * MiB) : 0,
  };
}

/** What one task asks of the node. */
export interface TaskSize {
  parameters: number;
  epochs: number;
  batchSize: number;
  localExamples: number;
  /** Values the layers output for one example (core/model/spec.ts activationsPerExample). */
  activationsPerExample: number;
  /** Training threads (data-parallel replicas, trainer/training/data-parallel.ts); 1 when absent. */
  threads?: number;
}

/** What a training worker thread adds before its replica: a V8 isolate, tfjs and the wasm heap (64.8 MiB measured with the 2NN). */
const WORKER_BYTES = 64 * MiB;

/** Bytes a task adds to the node's memory while it trains (an estimate, erring high). */
export function taskMemoryBytes(size: TaskSize): number {
  const threads = size.threads ?? 1;
  // Each replica holds its own weight copies; the shares' activations add up to one batch's; the
  // threads exchange their updates through two sets of one buffer per thread.
  const exchange = threads > 1 ? 2 * threads * size.parameters : 0;
  return (
    4 * (threads * WEIGHT_COPIES * size.parameters + exchange + ACTIVATION_COPIES * size.batchSize * size.activationsPerExample) +
    (threads - 1) * WORKER_BYTES
  );
}

const n = (x: number) => Math.round(x).toLocaleString('en-US');
const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;

/**
 * The first cap the task exceeds, as the reason to decline with, or undefined.
 * `rssBytes` is the process's resident memory now; `examplesPerSecond` this
 * node's measured speed, when it has trained before.
 */
export function overCap(caps: Caps, size: TaskSize, now: { rssBytes: number; examplesPerSecond?: number }): string | undefined {
  if (caps.max_parameters !== undefined && size.parameters > caps.max_parameters) {
    return `over the parameter cap: the model has ${n(size.parameters)} parameters, the cap is ${n(caps.max_parameters)}`;
  }
  const modelBytes = 4 * size.parameters;
  if (caps.max_model_mb !== undefined && modelBytes > caps.max_model_mb * MiB) {
    return `over the model-size cap: the weights take ${mib(modelBytes)}, the cap is ${caps.max_model_mb} MiB`;
  }
  const examples = size.epochs * size.localExamples;
  if (caps.max_examples_per_task !== undefined && examples > caps.max_examples_per_task) {
    return `over the work cap: ${size.epochs} epochs × ${n(size.localExamples)} examples = ${n(examples)}, the cap is ${n(caps.max_examples_per_task)}`;
  }
  if (caps.memory_mb !== undefined) {
    const needed = now.rssBytes + taskMemoryBytes(size);
    if (needed > caps.memory_mb * MiB) {
      return `over the memory cap: the node uses ${mib(now.rssBytes)} and the task needs about ${mib(taskMemoryBytes(size))} more, the cap is ${caps.memory_mb} MiB`;
    }
  }
  if (caps.max_task_seconds !== undefined && now.examplesPerSecond !== undefined && now.examplesPerSecond > 0) {
    const seconds = examples / now.examplesPerSecond;
    if (seconds > caps.max_task_seconds) {
      return `over the time cap: ${n(examples)} examples at this node's ${n(now.examplesPerSecond)} examples/s take about ${n(seconds)} s, the cap is ${caps.max_task_seconds} s`;
    }
  }
  return undefined;
}

/** Whether training must stop now because the process passed its memory cap. */
export function overMemoryCap(caps: Caps, rssBytes: number): boolean {
  return caps.memory_mb !== undefined && rssBytes > caps.memory_mb * MiB;
}

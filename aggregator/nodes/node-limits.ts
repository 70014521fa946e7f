// The caps a node's operator declared (NodeCapabilities.limits) against what
// the experiment's tasks ask of it. The aggregator checks the caps it can
// compute (model size, examples per task) before offering a task, so a node
// never has to decline what it said in advance it would not take.
import type { NodeLimits__Output } from '../../proto/generated/crowdfl/v1/NodeLimits.js';

/** What every task of the experiment asks of a node. */
export interface TaskDemand {
  parameters: number;
  epochs: number;
}

const count = (n: number) => n.toLocaleString('en-US');

/** Why a node with `limits` and `numExamples` local examples cannot take the experiment's tasks, or undefined. */
export function overLimits(limits: NodeLimits__Output | null | undefined, demand: TaskDemand, numExamples: number): string | undefined {
  if (!limits) return undefined;
  const modelBytes = demand.parameters * 4;
  const examples = demand.epochs * numExamples;
  if (limits.max_parameters > 0 && demand.parameters > limits.max_parameters) {
    return `the model has ${count(demand.parameters)} parameters; this node's cap is ${count(limits.max_parameters)}`;
  }
  if (limits.max_model_bytes > 0 && modelBytes > limits.max_model_bytes) {
    return `the model's weights take ${count(modelBytes)} bytes; this node's cap is ${count(limits.max_model_bytes)}`;
  }
  if (limits.max_examples_per_task > 0 && examples > limits.max_examples_per_task) {
    return `a task asks for ${demand.epochs} epochs × ${count(numExamples)} examples = ${count(examples)}; this node's cap is ${count(limits.max_examples_per_task)}`;
  }
  return undefined;
}

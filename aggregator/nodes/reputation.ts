// A node's reputation: an exponential moving average over its verdicts of
// 0 (the verdict holds evidence against the update) and 1 (it does not), so
// one bad round dents it and a history of bad rounds sinks it. A rule's
// capacity is no evidence: an honest update Multi-Krum did not select, or one
// a median used little, scores 1 (robust/verdict.ts says what evidence is).
// Pure functions; the round engine stores what they return.
import type { ReputationSpec } from '../experiment/sections.js';

export interface NodeStanding {
  readonly reputation: number;
  readonly verdicts: number;
}

export interface ReputationChange extends NodeStanding {
  readonly nodeId: string;
  /** Set when this change bans the node, with the reason shown to operators and to the node. */
  readonly ban?: string;
}

/** One verdict's effect on a node's reputation: `evidence` says whether it held evidence against the update. */
export function nextReputation(current: number, evidence: boolean, decay: number): number {
  return (1 - decay) * current + decay * (evidence ? 0 : 1);
}

/**
 * The standings after one round's verdicts, in verdict order. A node with
 * several verdicts in a round (it cannot, today: one task per node) would
 * have them applied in turn.
 */
export function reputationChanges(
  spec: ReputationSpec,
  standing: (nodeId: string) => NodeStanding,
  verdicts: readonly { nodeId: string; evidence: boolean }[],
): ReputationChange[] {
  const latest = new Map<string, ReputationChange>();
  for (const { nodeId, evidence } of verdicts) {
    const before = latest.get(nodeId) ?? standing(nodeId);
    const reputation = nextReputation(before.reputation, evidence, spec.decay);
    const count = before.verdicts + 1;
    const ban =
      spec.ban_below !== undefined && count >= spec.ban_after && reputation < spec.ban_below
        ? `reputation ${reputation.toFixed(3)} fell below ${spec.ban_below} after ${count} verdicts`
        : undefined;
    latest.set(nodeId, { nodeId, reputation, verdicts: count, ...(ban ? { ban } : {}) });
  }
  return [...latest.values()];
}

/** Whether a node may be selected under the experiment's reputation rule. */
export function selectable(spec: ReputationSpec, reputation: number): boolean {
  return spec.min_for_selection === undefined || reputation >= spec.min_for_selection;
}

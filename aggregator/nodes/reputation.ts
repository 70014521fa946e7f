// A node's reputation: an exponential moving average of the verdicts its
// updates received, so one bad round dents it and a history of bad rounds
// sinks it. Pure functions; the round engine stores what they return.
import type { ReputationSpec } from '../experiment/sections.js';
import type { Verdict } from '../robust/verdict.js';

const VERDICT_SCORE: Record<Verdict['verdict'], number> = { kept: 1, 'down-weighted': 0.5, rejected: 0 };

export interface NodeStanding {
  readonly reputation: number;
  readonly verdicts: number;
}

export interface ReputationChange extends NodeStanding {
  readonly nodeId: string;
  /** Set when this change bans the node, with the reason shown to operators and to the node. */
  readonly ban?: string;
}

export function nextReputation(current: number, verdict: Verdict['verdict'], decay: number): number {
  return (1 - decay) * current + decay * VERDICT_SCORE[verdict];
}

/**
 * The standings after one round's verdicts, in verdict order. A node with
 * several verdicts in a round (it cannot, today: one task per node) would
 * have them applied in turn.
 */
export function reputationChanges(
  spec: ReputationSpec,
  standing: (nodeId: string) => NodeStanding,
  verdicts: readonly { nodeId: string; verdict: Verdict['verdict'] }[],
): ReputationChange[] {
  const latest = new Map<string, ReputationChange>();
  for (const { nodeId, verdict } of verdicts) {
    const before = latest.get(nodeId) ?? standing(nodeId);
    const reputation = nextReputation(before.reputation, verdict, spec.decay);
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

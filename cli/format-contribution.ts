import { formatTotals, type ContributionTotals } from '../core/contribution-totals.js';

/** `crowdfl node status`: who the node is, whether it runs, and its totals. */
export function formatStatus(nodeId: string, t: ContributionTotals, state: { running: boolean; paused: boolean; problems: string[] }): string {
  const head = `node ${nodeId}: ${state.running ? 'running' : 'not running'}${state.paused ? ', PAUSED (crowdfl node resume)' : ''}\n`;
  const problems = state.problems.length ? `ledger lines skipped: ${state.problems.join('; ')}\n` : '';
  return head + formatTotals(t) + problems;
}

// The aggregator's view of one node's contribution to a run, from its
// database, in the same totals the node computes from its own ledger.
import { bump, emptyTotals, type ContributionTotals } from '../../core/contribution-totals.js';
import type { RunStore } from '../store/run-store.js';
import { inModel } from '../store/schema.js';

export function nodeContribution(store: RunStore, runId: string, nodeId: string): ContributionTotals {
  const t = emptyTotals();
  const tasks = store.tasksOfNode(runId, nodeId);
  const roundOfTask = new Map(tasks.map((task) => [task.taskId, task.round]));
  t.tasks = tasks.length;
  for (const task of tasks) if (task.declinedAt !== null) bump(t.declined, `${task.declineKind ?? 'DECLINE_UNSPECIFIED'}: ${task.declineReason ?? ''}`);
  const rounds = new Set<number>();
  const committed = new Set(store.committedRounds(runId).map((r) => r.round));
  for (const u of store.updatesOfNode(runId, nodeId)) {
    t.updatesSubmitted++;
    rounds.add(roundOfTask.get(u.taskId) ?? u.round);
    const metrics = JSON.parse(u.metrics) as { train_seconds?: number };
    t.computeSeconds += metrics.train_seconds ?? 0;
    t.examples += u.numExamples;
    // No reputation: the update never reached the aggregation rule (the upload checks refused it).
    if (u.verdict === 'rejected' && u.inputReputation === null) bump(t.refusedAtUpload, u.reason);
    else if (u.verdict === 'rejected') bump(t.rejected, u.reason || 'no reason given');
    else if (u.verdict === 'kept') t.kept++;
    else if (u.verdict === 'not-selected') t.notSelected++;
    else if (u.verdict === 'abandoned') t.abandoned++;
    else t.downWeighted++;
    if (inModel(u.verdict) && committed.has(u.round)) t.credited++;
  }
  t.roundsJoined = rounds.size;
  return t;
}

// A node's contribution as totals, computed the same way on both sides: by
// the node from its ledger (trainer/ledger.ts) and by the aggregator from its
// database (aggregator/nodes/contribution.ts), so an operator can hold one against
// the other.

export interface ContributionTotals {
  /** Tasks the node was given (that it recorded, or that the aggregator issued). */
  tasks: number;
  /** Rounds it sent an update for. */
  roundsJoined: number;
  updatesSubmitted: number;
  /** Uploads the aggregator refused before aggregation, by reason. */
  refusedAtUpload: Map<string, number>;
  kept: number;
  downWeighted: number;
  /** Updates the aggregation rule left out without evidence against them (its capacity: Multi-Krum's m). */
  notSelected: number;
  /** Updates the aggregation rule rejected on evidence, by reason. */
  rejected: Map<string, number>;
  /** Accepted uploads that went into no committed round (the aggregator restarted mid-round). */
  missing: number;
  /** Updates whose round attempt was abandoned (no quorum): in no model, and not held against the node. */
  abandoned: number;
  awaitingVerdict: number;
  /** Updates a committed round's signed record lists (kept or down-weighted). */
  credited: number;
  /** Outcomes whose signed record failed the node's check. */
  unconfirmed: string[];
  declined: Map<string, number>;
  /** Tasks dropped because their round closed first. */
  dropped: number;
  computeSeconds: number;
  /** Examples the updates were trained on (their FedAvg weights). */
  examples: number;
  /** Examples processed, epochs included (the node knows; the aggregator does not). */
  examplesTrained?: number;
}

export function emptyTotals(): ContributionTotals {
  return {
    tasks: 0,
    roundsJoined: 0,
    updatesSubmitted: 0,
    refusedAtUpload: new Map(),
    kept: 0,
    downWeighted: 0,
    notSelected: 0,
    rejected: new Map(),
    missing: 0,
    abandoned: 0,
    awaitingVerdict: 0,
    credited: 0,
    unconfirmed: [],
    declined: new Map(),
    dropped: 0,
    computeSeconds: 0,
    examples: 0,
  };
}

/**
 * A reason as a kind: numbers (scores, ranks, sizes) masked, and a gRPC
 * status prefix ("3 INVALID_ARGUMENT: ") dropped, so a node's hundreds of
 * rejections group into a few lines and both sides group alike. Each
 * update's exact reason stays in the ledger and the database.
 */
export function reasonKind(reason: string): string {
  // A number on its own, not one inside an id such as n-3f2a or t-7-3.
  return reason.replace(/^\d+ [A-Z_]+: /, '').replace(/(?<![\w.-])-?\d[\d,]*(\.\d+)?(e[+-]?\d+)?(?![\w-])/gi, '…');
}

export function bump(m: Map<string, number>, reason: string): void {
  const key = reasonKind(reason);
  m.set(key, (m.get(key) ?? 0) + 1);
}

const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);

/** The totals as the lines `crowdfl node status` and `crowdfl nodes show` print. */
export function formatTotals(t: ContributionTotals): string {
  const lines = [
    `tasks                ${t.tasks}`,
    `rounds joined        ${t.roundsJoined}`,
    `updates submitted    ${t.updatesSubmitted}`,
    `  kept               ${t.kept}`,
    `  down-weighted      ${t.downWeighted}`,
    `  not selected       ${t.notSelected}`,
    `  rejected           ${sum(t.rejected)}`,
    ...[...t.rejected].map(([why, n]) => `    ${n} × ${why}`),
    `  refused at upload  ${sum(t.refusedAtUpload)}`,
    ...[...t.refusedAtUpload].map(([why, n]) => `    ${n} × ${why}`),
    ...(t.missing ? [`  in no round        ${t.missing}`] : []),
    ...(t.abandoned ? [`  round abandoned    ${t.abandoned}`] : []),
    ...(t.awaitingVerdict ? [`  awaiting a verdict ${t.awaitingVerdict}`] : []),
    `credited (signed)    ${t.credited}`,
    ...(t.unconfirmed.length ? [`NOT confirmed        ${t.unconfirmed.length}`, ...t.unconfirmed.map((u) => `    ${u}`)] : []),
    `declined             ${sum(t.declined)}`,
    ...[...t.declined].map(([why, n]) => `    ${n} × ${why}`),
    ...(t.dropped ? [`dropped (round closed first) ${t.dropped}`] : []),
    `compute time         ${t.computeSeconds.toFixed(1)} s`,
    `examples (weights)   ${t.examples.toLocaleString('en-US')}`,
    ...(t.examplesTrained !== undefined ? [`examples trained     ${t.examplesTrained.toLocaleString('en-US')} (epochs included)`] : []),
  ];
  return `${lines.join('\n')}\n`;
}

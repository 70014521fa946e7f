// One line per round that says what the aggregator did with the updates it
// received, e.g. "4 of 20 rejected (identical), 1 down-weighted (clipped), 1 not selected (krum score)".

/** A verdict as rules give it or the store keeps it (which adds 'abandoned'). */
type SummarisedVerdict = { readonly verdict: string; readonly reason: string; readonly weight?: number; readonly evidence?: string | null };

/** The reason without its figures: "krum score 12.3, not among …" → "krum score", "clipped from 9 to 5" → "clipped". */
export function reasonKind(reason: string): string {
  const cut = reason.search(/(^|\s)[-+]?[\d.]+|[:;,(]/);
  const head = (cut < 0 ? reason : reason.slice(0, cut)).trim().replace(/\s+(from|to|in|by|of|at|is)$/, '');
  return head || reason.trim();
}

/** Counts by the kind of evidence where there is some, else of the reason. */
function byKind(verdicts: readonly SummarisedVerdict[]): string {
  const counts = new Map<string, number>();
  for (const v of verdicts) {
    const kind = reasonKind(v.evidence ?? v.reason);
    counts.set(kind, (counts.get(kind) ?? 0) + 1);
  }
  return [...counts.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([kind, count]) => (counts.size > 1 ? `${count} ${kind}` : kind))
    .join(', ');
}

export function summarizeVerdicts(verdicts: readonly SummarisedVerdict[]): string {
  const n = verdicts.length;
  const rejected = verdicts.filter((v) => v.verdict === 'rejected');
  const down = verdicts.filter((v) => v.verdict === 'down-weighted');
  const notSelected = verdicts.filter((v) => v.verdict === 'not-selected');
  // Used by the rule, and still looked Byzantine.
  const flagged = verdicts.filter((v) => v.verdict !== 'rejected' && v.evidence != null);
  if (!rejected.length && !down.length && !notSelected.length && !flagged.length) return `all ${n} kept`;
  const parts: string[] = [];
  if (rejected.length) parts.push(`${rejected.length} of ${n} rejected (${byKind(rejected)})`);
  if (down.length) parts.push(`${down.length} down-weighted (${byKind(down)})`);
  if (notSelected.length) parts.push(`${notSelected.length} not selected (${byKind(notSelected)})`);
  if (flagged.length) parts.push(`${flagged.length} used but flagged (${byKind(flagged)})`);
  return parts.join(', ');
}

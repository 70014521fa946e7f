// Byzantine nodes for attack experiments. A simulation picks which node
// processes are Byzantine and writes each an attack file; the attack entry
// point (byzantine-node-main.ts) then runs the ordinary node command with its
// labels flipped or its honest update replaced just before signing. Nothing about the protocol
// changes: the aggregator sees a correctly signed update from a known key,
// which is exactly what a compromised volunteer would send.
import { readFileSync, writeFileSync } from 'node:fs';
import type { UpdateRow } from '../aggregator/store/schema.js';
import { z } from 'zod';
import { Rng } from '../core/rng.js';
import type { Dataset } from '../core/dataset.js';
import { awaitColluders, shareHonestUpdate } from './collusion.js';
import { craftUpdate, flipLabels } from './craft.js';
import { attackSchema, needsCollusion, poisonsData, type AttackSpec } from '../aggregator/experiment/attack-schema.js';
import type { UpdateAdversary } from '../trainer/node.js';

export const attackFileSchema = z
  .object({
    attack: attackSchema,
    seed: z.number().int().nonnegative(),
    /** How many updates the aggregator combines per round, and how many of those are Byzantine. */
    n: z.number().int().positive(),
    f: z.number().int().nonnegative(),
    /** Attackers this node colludes with, itself included. */
    colluders: z.number().int().positive(),
    collusion_dir: z.string(),
    collusion_wait_ms: z.number().int().nonnegative(),
  })
  .strict();
export type AttackFile = z.infer<typeof attackFileSchema>;

/** Which of `nodes` node indices are Byzantine: round(fraction·nodes) of them, chosen by the seed. */
export function chooseByzantine(nodes: number, fraction: number, seed: number, purpose = 'byzantine-nodes'): number[] {
  const count = Math.round(fraction * nodes);
  const order = Array.from({ length: nodes }, (_, i) => i);
  Rng.derive(seed, purpose).shuffle(order);
  return order.slice(0, count).sort((a, b) => a - b);
}

export function writeAttackFile(path: string, file: AttackFile): void {
  writeFileSync(path, JSON.stringify(file, null, 2));
}

export function readAttackFile(path: string): AttackFile {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read attack file ${path}: ${(err as Error).message}`);
  }
  const parsed = attackFileSchema.safeParse(json);
  if (!parsed.success) throw new Error(`attack file ${path} is not valid: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return parsed.data;
}

/** Label flipping poisons the data the node trains on; other attacks leave it alone. */
export function poisonData(attack: AttackSpec, data: Dataset): Dataset {
  return poisonsData(attack) ? { ...data, labels: flipLabels(data.labels, data.numClasses) } : data;
}

/** The hook the node calls with its honest update; returns what it uploads instead. */
export function adversary(file: AttackFile, nodeId: string, log: (msg: string) => void): UpdateAdversary {
  const { attack } = file;
  return async ({ round, delta, deadline }) => {
    let colluders: Float32Array[] | undefined;
    if (needsCollusion(attack)) {
      await shareHonestUpdate(file.collusion_dir, round, nodeId, delta);
      // Wait for the others, but leave time to upload before the deadline.
      const wait = Math.max(0, Math.min(file.collusion_wait_ms, deadline - Date.now() - 5000));
      colluders = await awaitColluders(file.collusion_dir, round, file.colluders, wait);
    }
    const rng = Rng.derive(file.seed, 'attack', nodeId, round);
    const crafted = craftUpdate(attack, delta, { rng, colluders, n: file.n, f: file.f });
    log(
      `round ${round}: ${attack.kind} attack${colluders ? ` with ${colluders.length} colluders' updates` : ''}` +
        `${crafted.gamma !== undefined ? `, γ = ${crafted.gamma}` : ''}${crafted.note ? ` (${crafted.note})` : ''}`,
    );
    return crafted.delta;
  };
}

export interface DetectionCounts {
  updates: number;
  /** Rejected on evidence (the pre-filter, the rule, or the evidence checks). */
  rejected: number;
  down_weighted: number;
  /** Left out by the rule without evidence (its capacity). */
  not_selected: number;
  /** With evidence against them: the rejected, and those the rule used but flagged. */
  flagged: number;
}

/** How the aggregator's verdicts fell on Byzantine and on honest nodes' updates. */
export function detection(
  updates: readonly Pick<UpdateRow, 'nodeId' | 'verdict' | 'evidence'>[],
  byzantineIds: ReadonlySet<string>,
): { byzantine: DetectionCounts; honest: DetectionCounts } {
  const counts = (): DetectionCounts => ({ updates: 0, rejected: 0, down_weighted: 0, not_selected: 0, flagged: 0 });
  const out = { byzantine: counts(), honest: counts() };
  for (const u of updates) {
    const c = byzantineIds.has(u.nodeId) ? out.byzantine : out.honest;
    c.updates++;
    if (u.verdict === 'rejected') c.rejected++;
    if (u.verdict === 'down-weighted') c.down_weighted++;
    if (u.verdict === 'not-selected') c.not_selected++;
    if (u.verdict === 'rejected' || (u.evidence !== null && u.evidence !== undefined)) c.flagged++;
  }
  return out;
}

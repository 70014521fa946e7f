// What a Byzantine node does in an experiment. `fraction` of the nodes run the
// attack; the rest are honest. Parameters default to the values the attacks'
// papers (or common reimplementations of them) use.
import { z } from 'zod';

const fraction = z
  .number({ error: 'fraction must be a number: the share of nodes that are Byzantine, 0 ≤ fraction < 1' })
  .min(0, { error: 'fraction is the share of nodes that are Byzantine and cannot be negative (0 ≤ fraction < 1)' })
  .lt(1, { error: 'fraction is the share of nodes that are Byzantine and must be below 1 (0 ≤ fraction < 1): someone has to be honest' })
  .describe('share of the nodes that are Byzantine, 0 ≤ fraction < 1');

export const attackSchema = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('sign-flip'),
      fraction,
      scale: z.number().positive().default(1).describe('sends −scale·delta'),
    })
    .strict(),
  z
    .object({
      kind: z.literal('gaussian-noise'),
      fraction,
      sigma: z.number().positive().default(1).describe('sends N(0, σ²) per coordinate in place of the update'),
    })
    .strict(),
  z
    .object({
      kind: z.literal('scaling'),
      fraction,
      factor: z
        .number()
        .positive()
        .default(10)
        .describe('model replacement (Bagdasaryan et al. 2020): sends factor·delta'),
    })
    .strict(),
  // Data poisoning: the node trains honestly on labels y → classes − 1 − y.
  z.object({ kind: z.literal('label-flip'), fraction }).strict(),
  z
    .object({
      kind: z.literal('alie'),
      fraction,
      z: z
        .number()
        .nonnegative()
        .optional()
        .describe("A Little Is Enough (Baruch et al. 2019): sends mean − z·std; omitted = the paper's z_max for n and f"),
    })
    .strict(),
  z
    .object({
      kind: z.literal('ipm'),
      fraction,
      epsilon: z
        .number()
        .positive()
        .default(0.5)
        .describe('Inner Product Manipulation (Xie et al. 2019): sends −ε·mean of the honest updates'),
    })
    .strict(),
  // Sends a zero delta (the base model unchanged) while still claiming its examples.
  z.object({ kind: z.literal('free-ride'), fraction }).strict(),
  z
    .object({
      kind: z.literal('example-inflation'),
      fraction,
      claimed: z
        .number()
        .int()
        .positive()
        .max(Number.MAX_SAFE_INTEGER)
        .default(1e9)
        .describe('declares this many local examples at hello and claims them in every update, to outweigh honest nodes under example-weighted rules'),
      scale: z.number().default(1).describe('sends scale·delta (1: its honest update; −1: reversed, so the claim carries the damage)'),
    })
    .strict(),
]);

export type AttackSpec = z.infer<typeof attackSchema>;
/** What an experiment file may omit (defaults fill it in). */
export type AttackInput = z.input<typeof attackSchema>;
export type AttackKind = AttackSpec['kind'];
export type CollusionAttackSpec = Extract<AttackSpec, { kind: 'alie' | 'ipm' }>;

/** ALIE and IPM need the colluders' honest updates of the round (see collusion.ts). */
export function needsCollusion(spec: AttackSpec): spec is CollusionAttackSpec {
  return spec.kind === 'alie' || spec.kind === 'ipm';
}

/** The example count a Byzantine node declares and claims instead of its real one, if its attack lies about it. */
export function claimedExamples(spec: AttackSpec): number | undefined {
  return spec.kind === 'example-inflation' ? spec.claimed : undefined;
}

/** Label flipping changes the node's training data, not its update. */
export function poisonsData(spec: AttackSpec): spec is Extract<AttackSpec, { kind: 'label-flip' }> {
  return spec.kind === 'label-flip';
}

// What a Byzantine node does in an experiment. `fraction` of the nodes run the
// attack; the rest are honest. Parameters default to the values the attacks'
// papers (or common reimplementations of them) use.
import { z } from 'zod';

const fraction = z
  .number({ error: 'fraction must be a number: the share of nodes that are Byzantine, 0 ≤ fraction < 1' })
  .min(0, { error: 'fraction is the share of nodes that are Byzantine and cannot be negative (0 ≤ fraction < 1)' })
  .lt(1, { error: 'fraction is the share of nodes that are Byzantine and must be below 1 (0 ≤ fraction < 1): someone has to be honest' })
  .describe('share of the nodes that are Byzantine, 0 ≤ fraction < 1');

/**
 * The two AGR-agnostic optimisation attacks of Shejwalkar & Houmansadr, "Manipulating the
 * Byzantine: Optimizing Model Poisoning Attacks and Defenses for Federated Learning", NDSS 2021
 * (§IV, Algorithm 1). Threat model as for ALIE (see attacks/collusion.ts): the paper's attacker
 * knows the benign updates, or in its "unknown benign gradients" variant estimates them from the
 * compromised clients' own honest updates; here the colluders' honest updates of the round stand in
 * for the benign updates, as for ALIE.
 */
const optimisationAttack = <K extends 'min-max' | 'min-sum'>(kind: K, condition: string) =>
  z
    .object({
      kind: z.literal(kind),
      fraction,
      perturbation: z
        .enum(['inverse-std', 'inverse-unit', 'inverse-sign'])
        .default('inverse-std')
        .describe('∇p: −std of the benign updates per coordinate, −mean/‖mean‖, or −sign(mean)'),
      gamma_init: z
        .number()
        .positive()
        .default(50)
        .describe(
          "the halving search's first γ; it searches [0, 2·gamma_init). The authors' code starts at 10 " +
            '(CIFAR-10) or 50 (FEMNIST); 50 here, the wider range',
        ),
      tolerance: z
        .number()
        .positive()
        .default(1e-5)
        .describe('τ: the search stops once its next probe is within τ of the last feasible γ, which leaves γ within 2τ below the largest feasible one (authors: 1e-5)'),
    })
    .strict()
    .refine((a) => a.tolerance < a.gamma_init, {
      error: 'tolerance must be below gamma_init: otherwise the γ search stops before its first probe and sends the mean',
      path: ['tolerance'],
    })
    .describe(`${kind} (Shejwalkar & Houmansadr 2021): sends mean + γ·∇p with the largest γ such that ${condition}`);

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
  optimisationAttack('min-max', 'max_i ‖malicious − b_i‖ ≤ max_{i,j} ‖b_i − b_j‖'),
  optimisationAttack('min-sum', 'Σ_i ‖malicious − b_i‖² ≤ max_i Σ_j ‖b_i − b_j‖²'),
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
export type CollusionAttackSpec = Extract<AttackSpec, { kind: 'alie' | 'ipm' | 'min-max' | 'min-sum' }>;
export type OptimisationAttackSpec = Extract<AttackSpec, { kind: 'min-max' | 'min-sum' }>;

/** ALIE, IPM, min-max and min-sum need the colluders' honest updates of the round (see collusion.ts). */
export function needsCollusion(spec: AttackSpec): spec is CollusionAttackSpec {
  return spec.kind === 'alie' || spec.kind === 'ipm' || spec.kind === 'min-max' || spec.kind === 'min-sum';
}

/** The example count a Byzantine node declares and claims instead of its real one, if its attack lies about it. */
export function claimedExamples(spec: AttackSpec): number | undefined {
  return spec.kind === 'example-inflation' ? spec.claimed : undefined;
}

/** Label flipping changes the node's training data, not its update. */
export function poisonsData(spec: AttackSpec): spec is Extract<AttackSpec, { kind: 'label-flip' }> {
  return spec.kind === 'label-flip';
}

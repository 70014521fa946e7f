import { z } from 'zod';
import { num } from './format.js';
import { stepAndDistances } from './kernels/vectors.js';
import { atLeastOneUpdate, ruleSchema, type RobustRule } from './rule.js';
import { AggregationError, checkSameLength, type AggregationResult, type Verdict } from './verdict.js';

/** Centered clipping needs one update. */
export const CENTERED_CLIPPING_MIN_UPDATES = 1;

const centeredClippingSchema = ruleSchema('centered-clipping', {
  tau: z.number().positive().describe('clipping radius around the current centre'),
  iterations: z.number().int().positive().max(100).default(3),
});

export const centeredClippingRule: RobustRule<typeof centeredClippingSchema> = {
  name: 'centered-clipping',
  schema: centeredClippingSchema,
  weighted: false,
  minUpdates: () => CENTERED_CLIPPING_MIN_UPDATES,
  precondition: { text: 'n ≥ 1', check: (spec, n) => atLeastOneUpdate(spec.rule, n) },
  apply: (spec, updates, _examples, options) => centeredClipping(updates, { tau: spec.tau, iterations: spec.iterations, center: options.center }),
};

export interface CenteredClippingOptions {
  /** τ: the clipping radius around the current centre. */
  readonly tau: number;
  readonly iterations: number;
  /** Where the iterations start (e.g. the previous round's aggregate or momentum); zeros when absent. */
  readonly center?: Float32Array;
}

/**
 * Centered clipping (Karimireddy, He & Jaggi 2021): starting from `center`,
 *   v ← v + (1/n) Σᵢ clip_τ(uᵢ − v),  clip_τ(x) = x·min(1, τ/‖x‖),
 * `iterations` times. Unweighted. Each iteration is one pass over the
 * updates: the step is fused with the distances to the new v that the next
 * iteration clips by.
 *
 * Verdicts: weight = the update's share of the result (the part contributed
 * by the centre is left out, the shares sum to 1); an update clipped in any
 * iteration is 'down-weighted', with how far it was and how much it was
 * scaled; score = its distance from the centre in the last iteration.
 */
export function centeredClipping(updates: readonly Float32Array[], options: CenteredClippingOptions): AggregationResult {
  const d = checkSameLength(updates);
  const n = updates.length;
  const { tau, iterations, center } = options;
  if (!(tau > 0 && Number.isFinite(tau))) throw new AggregationError(`centered-clipping needs τ > 0; got τ=${tau}`);
  if (!(Number.isInteger(iterations) && iterations >= 1)) throw new AggregationError(`centered-clipping needs iterations ≥ 1; got ${iterations}`);
  if (center !== undefined && center.length !== d) {
    throw new AggregationError(`the centre has ${center.length} values, the updates have ${d}`);
  }
  const v = center === undefined ? new Float64Array(d) : Float64Array.from(center);
  const dist2 = new Float64Array(n);
  stepAndDistances(updates, v, undefined, 0, dist2);

  const share = new Float64Array(n);
  const clipped = new Int32Array(n);
  const lastDistance = new Float64Array(n);
  const lastScale = new Float64Array(n).fill(1);
  const coeffs = new Float64Array(n);
  for (let it = 0; it < iterations; it++) {
    let total = 0;
    for (let i = 0; i < n; i++) {
      const r = Math.sqrt(dist2[i]!);
      const s = r > tau ? tau / r : 1;
      lastDistance[i] = r;
      lastScale[i] = s;
      if (s < 1) clipped[i]!++;
      coeffs[i] = s / n;
      total += s;
    }
    const base = 1 - total / n;
    for (let i = 0; i < n; i++) share[i] = base * share[i]! + coeffs[i]!;
    // The last step needs no distances to the result.
    stepAndDistances(updates, v, coeffs, base, it + 1 < iterations ? dist2 : undefined);
  }
  let sum = 0;
  for (let i = 0; i < n; i++) sum += share[i]!;
  const verdicts: Verdict[] = [];
  for (let i = 0; i < n; i++) {
    const weight = share[i]! / sum;
    const score = lastDistance[i]!;
    verdicts.push(
      clipped[i]! > 0
        ? {
            verdict: 'down-weighted',
            weight,
            score,
            reason:
              `clipped in ${clipped[i]} of ${iterations} iteration${iterations === 1 ? '' : 's'}; in the last, distance ` +
              `${num(score)} from the centre${lastScale[i]! < 1 ? `, scaled by ${num(lastScale[i]!)} to τ=${tau}` : ` (within τ=${tau})`}`,
          }
        : {
            verdict: 'kept',
            weight,
            score,
            reason: `within τ=${tau} of the centre in all ${iterations} iteration${iterations === 1 ? '' : 's'} (last distance ${num(score)})`,
          },
    );
  }
  return { aggregate: Float32Array.from(v), verdicts };
}

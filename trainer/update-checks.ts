// The node's own check on its update before it signs it: a run whose local
// loss went non-finite or exploded produced weights that would only harm the
// global model (a careless volunteer's unscaled data, a learning rate far too
// high for its data). The node declines the task with the reason instead of
// submitting, so the operator sees it in the log and ledger and the
// aggregator records the decline, and the round does not have to defend
// against it.

/** How many times its starting loss a run's final loss may reach before it counts as exploded. */
export const EXPLODED_LOSS_FACTOR = 10;

export interface LossTrace {
  /** Mean cross-entropy of the first batch, before any step. */
  start_loss: number;
  /** Mean cross-entropy over the last (possibly partial) epoch. */
  loss: number;
}

/**
 * Why this update must not be submitted, or undefined when its training looks sane. Exploded means
 * the final loss is both above EXPLODED_LOSS_FACTOR × the starting loss and above ln(classes), the
 * loss of a uniform guess: an honest run that got a little worse on skewed data passes, and a run
 * whose loss went far past guessing has learned nothing worth averaging.
 */
export function divergedTraining(m: LossTrace, numClasses: number): string | undefined {
  if (!Number.isFinite(m.loss)) return `local training diverged: the final loss is ${m.loss} (it started at ${format(m.start_loss)}); check that the data's features are scaled as the model expects (e.g. pixels in [0, 1])`;
  const guess = Math.log(Math.max(2, numClasses));
  if (Number.isFinite(m.start_loss) && m.loss > EXPLODED_LOSS_FACTOR * m.start_loss && m.loss > guess) {
    return (
      `local training diverged: the loss rose from ${format(m.start_loss)} to ${format(m.loss)} ` +
      `(over ${EXPLODED_LOSS_FACTOR}× its start and above ${format(guess)}, the loss of a uniform guess); ` +
      `check that the data's features are scaled as the model expects (e.g. pixels in [0, 1])`
    );
  }
  return undefined;
}

function format(x: number): string {
  return Number.isFinite(x) ? (Math.abs(x) >= 1e4 ? x.toExponential(2) : x.toPrecision(3)) : String(x);
}

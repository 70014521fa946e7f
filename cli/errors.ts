import { ExperimentError } from '../core/experiment.js';
import { DatasetError } from '../datasets/errors.js';

/** A mistake the user can fix: printed as a message, not a stack trace. */
export class UsageError extends Error {}

export function isUserError(err: unknown): err is Error {
  return err instanceof UsageError || err instanceof ExperimentError || err instanceof DatasetError;
}

/** Runs a subcommand's action, turning user errors into a message and exit code 2. */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void> | void): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      if (isUserError(err)) {
        process.stderr.write(`crowdfl: ${err.message}\n`);
        process.exit(2);
      }
      throw err;
    }
  };
}

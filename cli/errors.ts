import { UserError } from '../core/user-error.js';

/** A mistake the user can fix: printed as a message, not a stack trace. */
export class UsageError extends UserError {}

export function isUserError(err: unknown): err is Error {
  return err instanceof UserError;
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

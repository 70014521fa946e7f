import { ExperimentError } from '../core/experiment.js';
import { DatasetError } from '../datasets/errors.js';
import { KeyFileError } from '../core/keys.js';
import { TlsError } from '../core/tls.js';
import { InvitationError } from '../core/signing.js';
import { ImpostorError } from '../trainer/client.js';
import { AggregatorRefusal } from '../trainer/node.js';
import { NotARunError } from '../experiments/report.js';
import { RerunError } from '../experiments/rerun.js';
import { NodeConfigError } from '../trainer/node-config.js';

/** A mistake the user can fix: printed as a message, not a stack trace. */
export class UsageError extends Error {}

export function isUserError(err: unknown): err is Error {
  return [UsageError, TlsError, ExperimentError, DatasetError, KeyFileError, InvitationError, ImpostorError, AggregatorRefusal, NotARunError, RerunError, NodeConfigError].some(
    (kind) => err instanceof kind,
  );
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

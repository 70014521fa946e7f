import { UserError } from '../core/user-error.js';
/**
 * A problem with data the user can fix: a missing package, a malformed file,
 * an impossible partition. Messages say what is wrong and how to fix it, so
 * the CLI can print them without a stack trace.
 */
export class DatasetError extends UserError {
  override name = 'DatasetError';
}

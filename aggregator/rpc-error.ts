import { status } from '@grpc/grpc-js';

/** An error that reaches the caller as this gRPC status and message. */
export class RpcError extends Error {
  /**
   * Set when the refusal is already kept with its round (as a rejected update row); every other refused
   * call is kept in the refusals table, so no refusal goes unrecorded and none is recorded twice.
   */
  recorded = false;

  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message);
  }
}

/** The aggregator is busy: come back after `retryAfterMs` (sent as the `retry-after-ms` trailer). */
export class BusyError extends RpcError {
  constructor(
    readonly retryAfterMs: number,
    message: string,
  ) {
    super(status.RESOURCE_EXHAUSTED, message);
  }
}

export const invalid = (msg: string) => new RpcError(status.INVALID_ARGUMENT, msg);
export const notFound = (msg: string) => new RpcError(status.NOT_FOUND, msg);
export const precondition = (msg: string) => new RpcError(status.FAILED_PRECONDITION, msg);
export const tooLarge = (msg: string) => new RpcError(status.RESOURCE_EXHAUSTED, msg);
export const alreadyExists = (msg: string) => new RpcError(status.ALREADY_EXISTS, msg);

/** The most characters of a caller's input an error message repeats. */
export const ECHO_MAX_CHARS = 80;

/**
 * A caller's input as an error message repeats it: quoted, and cut to ECHO_MAX_CHARS with its length said.
 * Every RpcError that names what the caller sent goes through this, so a 200 KB session id costs the reply
 * (and the refusal record that keeps its message) one line, not 200 KB.
 */
export function echo(input: string): string {
  if (input.length <= ECHO_MAX_CHARS) return JSON.stringify(input);
  return `${JSON.stringify(input.slice(0, ECHO_MAX_CHARS))}… (${input.length} characters)`;
}

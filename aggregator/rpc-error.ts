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

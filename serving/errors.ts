// Why a predict request was not answered with predictions, in terms both
// front ends (HTTP and gRPC) translate to their own status: one place decides
// that an unknown model is "not found" and a full queue is "overloaded".

export type ServingErrorKind =
  /** The request is malformed (shape, dtype, size, JSON): retrying it unchanged cannot succeed. */
  | 'invalid'
  /** No such model name or version. */
  | 'not_found'
  /** Larger than this server accepts at all (body bytes, instances). */
  | 'too_large'
  /** The server is saturated now; retrying later may succeed. */
  | 'overloaded'
  /** The model exists but no version of it can answer yet (still loading, or its load failed). */
  | 'unavailable'
  /** The client's deadline passed before the request reached the model. */
  | 'deadline';

export class ServingError extends Error {
  constructor(
    readonly kind: ServingErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'ServingError';
  }
}

/** HTTP status per kind, as TF Serving's REST API and common practice use them. */
export const HTTP_STATUS: Readonly<Record<ServingErrorKind, number>> = {
  invalid: 400,
  not_found: 404,
  too_large: 413,
  overloaded: 429,
  unavailable: 503,
  deadline: 504,
};

/**
 * An 'overloaded' refusal without a stack trace: refusals are the hot path
 * under overload, and capturing a stack was about 7% of a refusal's CPU.
 */
export function overloaded(message: string): ServingError {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return new ServingError('overloaded', message);
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/**
 * Domain errors: what went wrong, in the platform's words. Code below the routes throws these;
 * only `src/http/errors.ts` knows which HTTP status each one becomes.
 */
export class DomainError extends Error {
  constructor(
    message: string,
    /** The request field the error is about, when there is one. */
    readonly field?: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export class NotFound extends DomainError {}
export class Conflict extends DomainError {}
/** A single request asks for more than its tenant may ever have (→ 422 naming the limit). */
export class LimitExceeded extends DomainError {
  constructor(
    message: string,
    field: string,
    readonly limit: string,
  ) {
    super(message, field);
  }
}
/** A rate, queue or budget limit that will pass with time (→ 429 with Retry-After). */
export class QuotaExceeded extends DomainError {
  constructor(
    message: string,
    readonly limit: string,
    readonly retryAfterSeconds: number,
  ) {
    super(message, limit);
  }
}
/** The request is well-formed but cannot be honoured as asked (→ 422). */
export class Unprocessable extends DomainError {}
/** A write carried a fencing token that is no longer current: the attempt lost its lease. */
export class LeaseLost extends DomainError {}
/**
 * The data disk is full: the write was rolled back whole (→ 507 with Retry-After). Reads still
 * work, and the same request succeeds once space is freed.
 */
export class StorageFull extends DomainError {
  constructor(message: string, o?: { cause?: unknown }) {
    super(message);
    if (o) this.cause = o.cause;
  }
}

import type { ErrorCode } from "../errors/codes.js";

/** Optional extras of a service error. */
export interface ServiceErrorOptions {
  cause?: unknown;
  /** Field-level messages for validation failures. */
  details?: Record<string, unknown>;
}

/**
 * A domain error thrown by services. The message is safe to show to the caller; internal detail
 * goes in `cause`, which is logged but never returned.
 */
export class ServiceError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: ServiceErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = "ServiceError";
    this.code = code;
    this.details = options.details;
  }
}

/** `<kind> <id> was not found`; also used for another team's resources so their existence does not leak. */
export class NotFoundError extends ServiceError {
  constructor(kind: string, id: string) {
    super("NOT_FOUND", `${kind} ${id} was not found`);
  }
}

/** The resource is not in a state that allows the operation. */
export class ConflictError extends ServiceError {
  constructor(message: string) {
    super("CONFLICT", message);
  }
}

/** The request is well-formed but names something invalid (unknown template, bad path…). */
export class BadRequestError extends ServiceError {
  constructor(message: string, details?: Record<string, unknown>) {
    super("BAD_REQUEST", message, { details });
  }
}

/** No host can take the sandbox. */
export class CapacityError extends ServiceError {
  constructor(message = "no host has capacity for this sandbox") {
    super("NO_CAPACITY", message);
  }
}

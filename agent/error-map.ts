import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { AgentError, type AgentErrorCode } from "./errors.js";
import type { Logger } from "./logger.js";

/** The one table from the agent's domain errors to Connect codes. */
export const CONNECT_CODE: Record<AgentErrorCode, Code> = {
  INVALID_ARGUMENT: Code.InvalidArgument,
  NOT_FOUND: Code.NotFound,
  ALREADY_EXISTS: Code.AlreadyExists,
  FAILED_PRECONDITION: Code.FailedPrecondition,
  RESOURCE_EXHAUSTED: Code.ResourceExhausted,
  UNAVAILABLE: Code.Unavailable,
  DEADLINE_EXCEEDED: Code.DeadlineExceeded,
  INTERNAL: Code.Internal,
};

/** The same table for the agent's plain HTTP routes (/proxy). */
export const HTTP_STATUS: Record<AgentErrorCode, number> = {
  INVALID_ARGUMENT: 400,
  NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  FAILED_PRECONDITION: 409,
  RESOURCE_EXHAUSTED: 429,
  UNAVAILABLE: 503,
  DEADLINE_EXCEEDED: 504,
  INTERNAL: 500,
};

/**
 * Maps any error to a ConnectError: domain errors by the table with an `error-reason` header, envd's
 * Connect errors keep their code (prefixed "envd: "), anything else is logged and answered as a
 * generic Internal error so no internal detail leaks.
 */
export function toConnectError(err: unknown, logger: Logger): ConnectError {
  if (err instanceof AgentError) {
    return new ConnectError(err.message, CONNECT_CODE[err.code], { "error-reason": err.reason });
  }
  if (err instanceof ConnectError) {
    if (err.code === Code.Canceled || err.code === Code.DeadlineExceeded) return err;
    return new ConnectError(`envd: ${err.rawMessage}`, err.code, { "error-reason": "ENVD_ERROR" });
  }
  logger.error("unhandled error in handler", { err });
  return new ConnectError("internal error", Code.Internal, { "error-reason": "INTERNAL" });
}

export function errorInterceptor(logger: Logger): Interceptor {
  return (next) => async (req) => {
    try {
      const res = await next(req);
      if (!res.stream) return res;
      const source = res.message;
      async function* mapped() {
        try {
          yield* source;
        } catch (err) {
          throw toConnectError(err, logger);
        }
      }
      return { ...res, message: mapped() };
    } catch (err) {
      throw toConnectError(err, logger);
    }
  };
}

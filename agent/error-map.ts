import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { AgentError, type AgentErrorCode, isHostDiskFull } from "./errors.js";
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
  const diskFull = hostDiskFull(err, logger);
  if (diskFull) return diskFull;
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

/**
 * A failure that comes down to the host's disk being full (ENOSPC or EDQUOT anywhere in it) is not an
 * agent bug but a capacity limit: RESOURCE_EXHAUSTED with reason HOST_DISK_FULL, which the edge
 * answers as 503 NO_CAPACITY. The message is fixed (the errno text names host paths); the detail is
 * logged. A create that fails this way has already been torn down (SandboxManager.create), so the
 * message can say nothing of it is left. Domain errors that already chose a code other than
 * INTERNAL keep it, and envd's own errors (a guest's disk, not the host's) pass through untouched.
 */
function hostDiskFull(err: unknown, logger: Logger): ConnectError | undefined {
  if (err instanceof ConnectError) return undefined;
  if (err instanceof AgentError && err.code !== "INTERNAL") return undefined;
  if (!isHostDiskFull(err)) return undefined;
  const creating = err instanceof AgentError && err.reason === "CREATE_FAILED";
  logger.warn("the host's disk is full", { err });
  return new ConnectError(
    creating
      ? "no space left on the host's disk: the sandbox was not created, and nothing of it is left on the host"
      : "no space left on the host's disk",
    Code.ResourceExhausted,
    { "error-reason": "HOST_DISK_FULL" },
  );
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

/**
 * Domain errors of the agent. Services throw these; the Connect error interceptor (server.ts) and the
 * HTTP routes map them to wire codes in one table each.
 */

export type AgentErrorCode =
  | "INVALID_ARGUMENT"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "FAILED_PRECONDITION"
  | "RESOURCE_EXHAUSTED"
  | "UNAVAILABLE"
  | "DEADLINE_EXCEEDED"
  | "INTERNAL";

/** A failure with a code and a stable machine-readable reason (sent as the `error-reason` header). */
export class AgentError extends Error {
  readonly code: AgentErrorCode;
  readonly reason: string;
  constructor(code: AgentErrorCode, reason: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AgentError";
    this.code = code;
    this.reason = reason;
  }
}

export const invalidArgument = (reason: string, message: string) => new AgentError("INVALID_ARGUMENT", reason, message);
export const sandboxNotFound = (id: string) =>
  new AgentError("NOT_FOUND", "SANDBOX_NOT_FOUND", `sandbox ${id} is not on this host`);
export const failedPrecondition = (reason: string, message: string) =>
  new AgentError("FAILED_PRECONDITION", reason, message);

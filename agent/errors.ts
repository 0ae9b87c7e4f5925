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

/** errno codes that mean a file system on the host has no room left. */
const DISK_FULL_ERRNOS: ReadonlySet<string> = new Set(["ENOSPC", "EDQUOT"]);
/** The same, as tools print it (mkfs.ext4, cp, the namespace launcher, runsc) on stderr or in a message. */
const DISK_FULL_TEXT = /No space left on device|Disk quota exceeded/i;

/**
 * Whether an error, or anything it wraps (`cause`, AggregateError `errors`, an execa error's
 * stderr), is the host's disk being full. Failures arrive wrapped (a create's teardown, a runtime's
 * own messages), so the chain is followed a few levels down.
 */
export function isHostDiskFull(err: unknown, depth = 0): boolean {
  if (depth > 6 || err === null || typeof err !== "object") return false;
  const e = err as { code?: unknown; message?: unknown; stderr?: unknown; cause?: unknown; errors?: unknown };
  if (typeof e.code === "string" && DISK_FULL_ERRNOS.has(e.code)) return true;
  if (typeof e.stderr === "string" && DISK_FULL_TEXT.test(e.stderr)) return true;
  if (typeof e.message === "string" && DISK_FULL_TEXT.test(e.message)) return true;
  if (Array.isArray(e.errors) && e.errors.some((inner) => isHostDiskFull(inner, depth + 1))) return true;
  return isHostDiskFull(e.cause, depth + 1);
}

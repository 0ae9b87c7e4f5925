import { AgentError, type AgentErrorCode } from "../../errors.js";

/**
 * Why a Firecracker runtime operation failed. A missing or unloadable snapshot is a problem with the
 * sandbox's data (FailedPrecondition: the manager marks the sandbox error and keeps its disk, which
 * the runtime has put back with the snapshot); a guest that would not start, pause or save is an
 * internal failure.
 */
export type FirecrackerErrorReason =
  | "START_FAILED"
  | "API_FAILED"
  | "SNAPSHOT_FAILED"
  | "SNAPSHOT_MISSING"
  | "SNAPSHOT_CORRUPT"
  | "RESTORE_FAILED";

const codeOf: Record<FirecrackerErrorReason, AgentErrorCode> = {
  START_FAILED: "INTERNAL",
  API_FAILED: "INTERNAL",
  SNAPSHOT_FAILED: "INTERNAL",
  SNAPSHOT_MISSING: "FAILED_PRECONDITION",
  SNAPSHOT_CORRUPT: "FAILED_PRECONDITION",
  RESTORE_FAILED: "INTERNAL",
};

/** An {@link AgentError} whose `reason` says which Firecracker step failed. */
export class FirecrackerRuntimeError extends AgentError {
  override readonly reason: FirecrackerErrorReason;

  constructor(reason: FirecrackerErrorReason, message: string, options?: { cause?: unknown }) {
    super(codeOf[reason], reason, message, options);
    this.name = "FirecrackerRuntimeError";
    this.reason = reason;
  }
}

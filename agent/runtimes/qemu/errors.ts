import { AgentError, type AgentErrorCode } from "../../errors.js";

/**
 * Why a QEMU runtime operation failed. A missing or corrupt snapshot is a problem with the caller's
 * data (FailedPrecondition: the manager marks the sandbox error and keeps its disk); a missing image
 * is NotFound; a missing kernel is a host that is not set up; a guest that would not start, stop or
 * save is an internal failure.
 */
export type QemuErrorReason =
  | "KERNEL_MISSING"
  | "IMAGE_MISSING"
  | "START_FAILED"
  | "QMP_FAILED"
  | "SNAPSHOT_FAILED"
  | "SNAPSHOT_MISSING"
  | "SNAPSHOT_CORRUPT"
  | "SNAPSHOT_INCOMPATIBLE"
  | "RESTORE_FAILED";

const codeOf: Record<QemuErrorReason, AgentErrorCode> = {
  KERNEL_MISSING: "FAILED_PRECONDITION",
  IMAGE_MISSING: "NOT_FOUND",
  START_FAILED: "INTERNAL",
  QMP_FAILED: "INTERNAL",
  SNAPSHOT_FAILED: "INTERNAL",
  SNAPSHOT_MISSING: "FAILED_PRECONDITION",
  SNAPSHOT_CORRUPT: "FAILED_PRECONDITION",
  SNAPSHOT_INCOMPATIBLE: "FAILED_PRECONDITION",
  RESTORE_FAILED: "INTERNAL",
};

/** An {@link AgentError} whose `reason` says which QEMU step failed. */
export class QemuRuntimeError extends AgentError {
  override readonly reason: QemuErrorReason;

  constructor(reason: QemuErrorReason, message: string, options?: { cause?: unknown }) {
    super(codeOf[reason], reason, message, options);
    this.name = "QemuRuntimeError";
    this.reason = reason;
  }
}

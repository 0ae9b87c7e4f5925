import { AgentError, type AgentErrorCode } from "../errors.js";

/**
 * Why a VM runtime (Firecracker, QEMU) operation failed. A missing, corrupt or incompatible snapshot
 * is a problem with the sandbox's data (FailedPrecondition: the manager marks the sandbox error and
 * keeps its disk, which the runtime has put back with the snapshot); a missing image is NotFound; a
 * missing kernel is a host that is not set up; a guest that would not start, pause, save or restore,
 * or whose VMM did not answer (Firecracker's API, QEMU's QMP), is an internal failure.
 */
export type VmErrorReason =
  | "KERNEL_MISSING"
  | "IMAGE_MISSING"
  | "START_FAILED"
  | "API_FAILED"
  | "QMP_FAILED"
  | "SNAPSHOT_FAILED"
  | "SNAPSHOT_MISSING"
  | "SNAPSHOT_CORRUPT"
  | "SNAPSHOT_INCOMPATIBLE"
  | "RESTORE_FAILED";

const codeOf: Record<VmErrorReason, AgentErrorCode> = {
  KERNEL_MISSING: "FAILED_PRECONDITION",
  IMAGE_MISSING: "NOT_FOUND",
  START_FAILED: "INTERNAL",
  API_FAILED: "INTERNAL",
  QMP_FAILED: "INTERNAL",
  SNAPSHOT_FAILED: "INTERNAL",
  SNAPSHOT_MISSING: "FAILED_PRECONDITION",
  SNAPSHOT_CORRUPT: "FAILED_PRECONDITION",
  SNAPSHOT_INCOMPATIBLE: "FAILED_PRECONDITION",
  RESTORE_FAILED: "INTERNAL",
};

/**
 * An {@link AgentError} whose `reason` says which step of a VM runtime failed. Each runtime has its
 * own subclass (its name, and the reasons it can give) so that callers can tell them apart.
 */
export class VmRuntimeError<R extends VmErrorReason = VmErrorReason> extends AgentError {
  override readonly reason: R;

  constructor(reason: R, message: string, options?: { cause?: unknown }) {
    super(codeOf[reason], reason, message, options);
    this.name = "VmRuntimeError";
    this.reason = reason;
  }
}

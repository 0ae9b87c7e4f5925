/**
 * Why a QEMU runtime operation failed, for the manager's error mapping: a missing or corrupt
 * snapshot is the caller's data problem (FailedPrecondition, sandbox marked error, disk kept),
 * a missing kernel or image is a host setup problem, and a guest that would not start or stop is
 * an internal failure.
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

export class QemuRuntimeError extends Error {
  readonly reason: QemuErrorReason;

  constructor(reason: QemuErrorReason, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "QemuRuntimeError";
    this.reason = reason;
  }
}

import { VmRuntimeError } from "../vm-errors.js";

/** The steps of a QEMU runtime operation that can fail (their codes: vm-errors.ts). */
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

/** A {@link VmRuntimeError} whose `reason` says which QEMU step failed. */
export class QemuRuntimeError extends VmRuntimeError<QemuErrorReason> {
  override name = "QemuRuntimeError";
}

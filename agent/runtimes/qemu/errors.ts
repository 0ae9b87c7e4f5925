import { type VmErrorReason, VmRuntimeError } from "../vm-errors.js";

/**
 * The steps of a QEMU runtime operation that can fail (their codes: vm-errors.ts): all a VM runtime
 * has but Firecracker's API (QEMU's control channel is QMP_FAILED).
 */
export type QemuErrorReason = Exclude<VmErrorReason, "API_FAILED">;

/** A {@link VmRuntimeError} whose `reason` says which QEMU step failed. */
export class QemuRuntimeError extends VmRuntimeError<QemuErrorReason> {
  override name = "QemuRuntimeError";
}

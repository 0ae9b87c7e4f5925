import { VmRuntimeError } from "../vm-errors.js";

/** The steps of a Firecracker runtime operation that can fail (their codes: vm-errors.ts). */
export type FirecrackerErrorReason =
  | "START_FAILED"
  | "API_FAILED"
  | "SNAPSHOT_FAILED"
  | "SNAPSHOT_MISSING"
  | "SNAPSHOT_CORRUPT"
  | "RESTORE_FAILED";

/** A {@link VmRuntimeError} whose `reason` says which Firecracker step failed. */
export class FirecrackerRuntimeError extends VmRuntimeError<FirecrackerErrorReason> {
  override name = "FirecrackerRuntimeError";
}

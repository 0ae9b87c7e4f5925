import type { SnapshotRow } from "../../db/schema/index.js";

/** A snapshot as the API shows it. */
export interface SnapshotView {
  id: string;
  teamId: string;
  /** E2B's optional name; null when none was given. */
  name: string | null;
  sourceSandboxId: string;
  hostId: string | null;
  template: string;
  runtime: string;
  /**
   * Whether sandboxes from it resume the source's memory and processes (QEMU, Firecracker, gVisor
   * with checkpoint). False: files only, so processes start fresh (namespace runtime).
   */
  keepsMemory: boolean;
  vcpus: number;
  memoryMb: number;
  sizeBytes: number;
  state: SnapshotRow["state"];
  error: string | null;
  createdAt: string;
}

/** Shapes a snapshot row for the API. */
export function toSnapshotView(row: SnapshotRow): SnapshotView {
  return {
    id: row.id,
    teamId: row.teamId,
    name: row.name,
    sourceSandboxId: row.sourceSandboxId,
    hostId: row.hostId,
    template: row.template,
    runtime: row.runtime,
    keepsMemory: row.keepsMemory,
    vcpus: row.vcpus,
    memoryMb: row.memoryMb,
    sizeBytes: row.sizeBytes,
    state: row.state,
    error: row.error,
    createdAt: row.createdAt.toISOString(),
  };
}

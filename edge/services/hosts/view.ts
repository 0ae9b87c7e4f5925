import type { HostRow } from "../../db/schema/index.js";

/** A host as the API shows it (never its token). */
export interface HostView {
  id: string;
  address: string;
  status: HostRow["status"];
  runtime: string;
  isolation: HostRow["isolation"];
  capacity: { vcpus: number; memoryMb: number; maxSandboxes: number };
  pauseToDisk: boolean;
  /** Whether snapshots taken here keep memory (processes resume) or files only (docs/snapshots.md). */
  snapshotsKeepMemory: boolean;
  templates: string[];
  agentVersion: string;
  envdVersion: string;
  consecutiveFailures: number;
  lastSeenAt: string | null;
  lastError: string | null;
  createdAt: string;
  /** Sandboxes placed on the host that still hold resources (present in listings). */
  activeSandboxes?: number;
}

/** Shapes a host row for the API. */
export function toHostView(row: HostRow, activeSandboxes?: number): HostView {
  const view: HostView = {
    id: row.id,
    address: row.address,
    status: row.status,
    runtime: row.runtime,
    isolation: row.isolation,
    capacity: { vcpus: row.capacityVcpus, memoryMb: row.capacityMemoryMb, maxSandboxes: row.capacityMaxSandboxes },
    pauseToDisk: row.pauseToDisk,
    snapshotsKeepMemory: row.snapshotsKeepMemory,
    templates: row.templates,
    agentVersion: row.agentVersion,
    envdVersion: row.envdVersion,
    consecutiveFailures: row.consecutiveFailures,
    lastSeenAt: row.lastSeenAt?.toISOString() ?? null,
    lastError: row.lastError,
    createdAt: row.createdAt.toISOString(),
  };
  if (activeSandboxes !== undefined) view.activeSandboxes = activeSandboxes;
  return view;
}

import type { SandboxNetwork } from "../../contracts/network.js";
import type { SandboxRow } from "../../db/schema/index.js";

/** A sandbox as the API shows it (never its envd token). */
export interface SandboxView {
  id: string;
  teamId: string;
  hostId: string | null;
  template: string;
  state: SandboxRow["state"];
  vcpus: number;
  memoryMb: number;
  timeoutSec: number;
  onTimeout: SandboxRow["onTimeout"];
  /** Whether a pause at the timeout keeps memory (false: its files only; resume reboots it). */
  keepMemory: boolean;
  /** Whether traffic through the sandbox proxy resumes it while paused. */
  autoResume: boolean;
  /** While paused: only its files were kept (its processes ended); resume boots it afresh. */
  pausedWithoutMemory: boolean;
  endAt: string | null;
  metadata: Record<string, string>;
  /** Egress policy (allowOut/denyOut); null when the sandbox has none. */
  network: SandboxNetwork | null;
  /** Whether the sandbox may reach the internet where no rule decides (default true). */
  internetAccess: boolean;
  envdVersion: string;
  /** Runtime of the host it was placed on ("" before placement). */
  runtime: string;
  /** Isolation class of the host it was placed on (null before placement). */
  isolation: SandboxRow["isolation"];
  stopReason: SandboxRow["stopReason"];
  error: string | null;
  createdAt: string;
  updatedAt: string;
  startedAt: string | null;
  stoppedAt: string | null;
}

/** Shapes a sandbox row for the API. */
export function toSandboxView(row: SandboxRow): SandboxView {
  return {
    id: row.id,
    teamId: row.teamId,
    hostId: row.hostId,
    template: row.template,
    state: row.state,
    vcpus: row.vcpus,
    memoryMb: row.memoryMb,
    timeoutSec: row.timeoutSec,
    onTimeout: row.onTimeout,
    keepMemory: row.keepMemory,
    autoResume: row.autoResume,
    pausedWithoutMemory: row.state === "paused" && row.pausedWithoutMemory,
    endAt: row.endAt?.toISOString() ?? null,
    metadata: row.metadata,
    network: row.network ?? null,
    internetAccess: row.internetAccess ?? true,
    envdVersion: row.envdVersion,
    runtime: row.runtime,
    isolation: row.isolation,
    stopReason: row.stopReason,
    error: row.error,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
    startedAt: row.startedAt?.toISOString() ?? null,
    stoppedAt: row.stoppedAt?.toISOString() ?? null,
  };
}

import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  type Entry,
  EntryType,
  Runtime,
  SandboxState,
  StopReason,
  TimeoutAction,
} from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import type { SandboxStateName, StopReasonName, TimeoutActionName } from "../db/schema/index.js";

/** The agent's sandbox state in the edge's vocabulary (STOPPING counts as still running until it is gone). */
export function stateFromAgent(state: SandboxState): SandboxStateName {
  switch (state) {
    case SandboxState.STARTING:
      return "starting";
    case SandboxState.RUNNING:
    case SandboxState.STOPPING:
      return "running";
    case SandboxState.PAUSING:
      return "pausing";
    case SandboxState.PAUSED:
      return "paused";
    case SandboxState.RESUMING:
      return "resuming";
    case SandboxState.STOPPED:
      return "stopped";
    case SandboxState.ERROR:
      return "error";
    default:
      return "starting";
  }
}

/** The agent's stop reason in the edge's vocabulary. */
export function stopReasonFromAgent(reason: StopReason): StopReasonName {
  switch (reason) {
    case StopReason.KILLED:
      return "killed";
    case StopReason.TIMEOUT:
      return "timeout";
    case StopReason.ERROR:
      return "error";
    default:
      return "lost";
  }
}

/** Edge timeout action → agent enum. */
export function timeoutActionToAgent(action: TimeoutActionName): TimeoutAction {
  return action === "pause" ? TimeoutAction.PAUSE : TimeoutAction.KILL;
}

/** Runtime enum → lower-case name (`firecracker`, `qemu`, `namespace`). */
export function runtimeName(runtime: Runtime): string {
  switch (runtime) {
    case Runtime.FIRECRACKER:
      return "firecracker";
    case Runtime.QEMU:
      return "qemu";
    case Runtime.GVISOR:
      return "gvisor";
    case Runtime.NAMESPACE:
      return "namespace";
    default:
      return "unknown";
  }
}

/** A protobuf timestamp as a Date, or null when unset. */
export function dateOrNull(ts: Timestamp | undefined): Date | null {
  return ts ? timestampDate(ts) : null;
}

/** A filesystem entry as the API shows it. */
export interface EntryView {
  name: string;
  path: string;
  type: "file" | "directory" | "symlink" | "unknown";
  size: number;
  mode: number;
  owner: string;
  modifiedAt: string | null;
  symlinkTarget?: string;
}

/** Shapes an agent filesystem entry for the API. */
export function entryView(entry: Entry): EntryView {
  const type =
    entry.type === EntryType.FILE
      ? "file"
      : entry.type === EntryType.DIRECTORY
        ? "directory"
        : entry.type === EntryType.SYMLINK
          ? "symlink"
          : "unknown";
  const view: EntryView = {
    name: entry.name,
    path: entry.path,
    type,
    size: Number(entry.size),
    mode: entry.mode,
    owner: entry.owner,
    modifiedAt: dateOrNull(entry.modifiedAt)?.toISOString() ?? null,
  };
  if (entry.symlinkTarget) view.symlinkTarget = entry.symlinkTarget;
  return view;
}

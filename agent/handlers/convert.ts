import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type EntryInfo, FileType } from "../../proto/gen/envd/filesystem/filesystem_pb.js";
import {
  type Entry,
  EntrySchema,
  EntryType,
  IsolationClass as IsolationClassEnum,
  Runtime as RuntimeEnum,
  type Sandbox,
  SandboxSchema,
  SandboxState,
  StopReason,
  TimeoutAction,
} from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import type { IsolationClass, RuntimeName } from "../runtimes/types.js";
import type { SandboxRecord, SandboxStatus, StopReasonName, TimeoutActionName } from "../sandboxes/record.js";
import { policyToProto } from "./network.js";

/** Conversions between the manager's records and the HostAgentService messages, in one place. */

const STATE: Record<SandboxStatus, SandboxState> = {
  starting: SandboxState.STARTING,
  running: SandboxState.RUNNING,
  pausing: SandboxState.PAUSING,
  paused: SandboxState.PAUSED,
  resuming: SandboxState.RESUMING,
  stopping: SandboxState.STOPPING,
  stopped: SandboxState.STOPPED,
  error: SandboxState.ERROR,
};

const STOP_REASON: Record<StopReasonName, StopReason> = {
  killed: StopReason.KILLED,
  timeout: StopReason.TIMEOUT,
  error: StopReason.ERROR,
  lost: StopReason.LOST,
};

export const RUNTIME: Record<RuntimeName, RuntimeEnum> = {
  firecracker: RuntimeEnum.FIRECRACKER,
  qemu: RuntimeEnum.QEMU,
  gvisor: RuntimeEnum.GVISOR,
  namespace: RuntimeEnum.NAMESPACE,
};

export const ISOLATION: Record<IsolationClass, IsolationClassEnum> = {
  vm: IsolationClassEnum.VM,
  gvisor: IsolationClassEnum.GVISOR,
  namespace: IsolationClassEnum.NAMESPACE,
};

export function timeoutActionFromProto(action: TimeoutAction | undefined): TimeoutActionName {
  return action === TimeoutAction.PAUSE ? "pause" : "kill";
}

export function sandboxToProto(r: SandboxRecord): Sandbox {
  return create(SandboxSchema, {
    sandboxId: r.id,
    template: r.template,
    state: STATE[r.status],
    vcpus: r.vcpus,
    memoryMb: r.memoryMb,
    createdAt: timestampFromMs(r.createdAt),
    endAt: r.endAt === undefined ? undefined : timestampFromMs(r.endAt),
    timeoutAction: r.timeoutAction === "pause" ? TimeoutAction.PAUSE : TimeoutAction.KILL,
    metadata: r.metadata,
    runtime: RUNTIME[r.runtime] ?? RuntimeEnum.UNSPECIFIED,
    stopReason: r.stopReason === undefined ? StopReason.UNSPECIFIED : STOP_REASON[r.stopReason],
    error: r.error ?? "",
    snapshotFiles: (r.snapshot?.files ?? []).map((f) => ({ name: f.name, sizeBytes: BigInt(f.sizeBytes) })),
    envdVersion: r.envdVersion,
    internetAccess: r.internetAccess,
    remainingTimeoutSec: r.remainingMs === undefined ? 0 : Math.ceil(r.remainingMs / 1000),
    stoppedAt: r.stoppedAt === undefined ? undefined : timestampFromMs(r.stoppedAt),
    network: policyToProto(r.network),
    timeoutKeepMemory: r.timeoutKeepMemory,
    pausedWithoutMemory: r.pausedWithoutMemory,
  });
}

const ENTRY_TYPE: Record<FileType, EntryType> = {
  [FileType.UNSPECIFIED]: EntryType.UNSPECIFIED,
  [FileType.FILE]: EntryType.FILE,
  [FileType.DIRECTORY]: EntryType.DIRECTORY,
  [FileType.SYMLINK]: EntryType.SYMLINK,
};

export function entryToProto(e: EntryInfo): Entry {
  return create(EntrySchema, {
    name: e.name,
    path: e.path,
    type: ENTRY_TYPE[e.type] ?? EntryType.UNSPECIFIED,
    size: e.size,
    mode: e.mode,
    modifiedAt: e.modifiedTime,
    symlinkTarget: e.symlinkTarget ?? "",
    owner: e.owner,
  });
}

import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type SnapshotInfo, SnapshotInfoSchema } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { RUNTIME } from "../handlers/convert.js";
import type { SnapshotView } from "../sandboxes/manager.js";

/** A saved snapshot as HostAgentService reports it. */
export function snapshotToProto(s: SnapshotView): SnapshotInfo {
  return create(SnapshotInfoSchema, {
    snapshotId: s.snapshotId,
    sourceSandboxId: s.sourceSandboxId,
    template: s.template,
    runtime: RUNTIME[s.runtime],
    keepsMemory: s.keepsMemory,
    vcpus: s.vcpus,
    memoryMb: s.memoryMb,
    sizeBytes: BigInt(s.sizeBytes),
    createdAt: timestampFromMs(s.createdAt),
    users: s.users,
  });
}

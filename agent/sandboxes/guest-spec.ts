import type { FilesLayout } from "../layout.js";
import { guestNetworkOf, type Slot } from "../network/slots.js";
import type { GuestSpec } from "../runtimes/types.js";
import type { SandboxRecord } from "./record.js";

/** No network: the guest of a sandbox that holds no slot (paused to disk, or being cleaned up). */
const NO_NETWORK: GuestSpec["network"] = {
  netns: "",
  tapName: "",
  guestIp: "",
  gatewayIp: "",
  prefixLength: 30,
  guestMac: "",
};

/** What a runtime is told about a sandbox's guest: its size, its files under the layout, its slot. */
export function guestSpec(layout: FilesLayout, record: SandboxRecord, slot: Slot | undefined): GuestSpec {
  return {
    sandboxId: record.id,
    template: record.template,
    vcpus: record.vcpus,
    memoryMb: record.memoryMb,
    sandboxDir: layout.sandboxDir(record.id),
    network: slot ? guestNetworkOf(slot) : NO_NETWORK,
    kernelPath: layout.kernelPath,
    initrdPath: layout.initrdPath,
    microvmKernelPath: layout.microvmKernelPath,
    imageRootfsTree: record.fromSnapshot?.templateTree || layout.imageRootfsTree(record.template),
    imageRootfsExt4: layout.imageRootfsExt4(record.template),
    ...(record.fromSnapshot?.layer !== undefined ? { snapshotLayer: record.fromSnapshot.layer } : {}),
  };
}

import { join } from "node:path";

/**
 * Every path the agent and the image builder use, derived from one root (AGENT_FILES_ROOTDIR,
 * default /var/lib/wrenn) so that a second agent on the same machine only needs another root.
 * The agent's own state (sandboxes, snapshots, token) may live under a separate state root
 * (AGENT_STATE_DIR), so that several agents share one set of images and kernels.
 */
export interface FilesLayout {
  root: string;
  /** Root of the agent's own state: sandboxes/, snapshots/ and the token file (defaults to root). */
  stateRoot: string;
  kernelsDir: string;
  imagesDir: string;
  sandboxesDir: string;
  snapshotsDir: string;
  tokenFile: string;
  /** Per-sandbox egress connection logs (`<id>.jsonl`), kept 24 h after the sandbox ends. */
  connectionsDir: string;
  /** Guest kernel (uncompressed ELF with a PVH entry; boots under QEMU microvm and Firecracker). */
  kernelPath: string;
  /** Initramfs that loads the virtio modules the kernel lacks; absent when the kernel has them built in. */
  initrdPath: string;
  /**
   * The microvm kernel the image builder compiles (rootfs/kernel/microvm.config): virtio-mmio, ext4 and the
   * rest built in, so it boots with no initramfs. The QEMU runtime prefers it when it exists.
   */
  microvmKernelPath: string;
  imageDir(template: string): string;
  /** The template's root tree: the read-only lower layer of the namespace runtime. */
  imageRootfsTree(template: string): string;
  /** The template's ext4 image: the read-only backing file of each VM's copy-on-write disk. */
  imageRootfsExt4(template: string): string;
  /** JSON manifest written last by the image builder; an image without one is incomplete. */
  imageManifest(template: string): string;
  sandboxDir(sandboxId: string): string;
  /** Where a paused-to-disk sandbox's own snapshot lives (snapshots/<sandbox id>/). */
  snapshotDir(sandboxId: string): string;
  /**
   * A saved snapshot (CreateSnapshot) that new sandboxes start from: snapshots/saved-<snapshot id>/.
   * The prefix keeps it apart from pause snapshots (a sandbox id has no '-'), and one level under
   * snapshots/ is where the image builder looks for template versions still in use.
   */
  savedSnapshotDir(snapshotId: string): string;
}

/** Prefix of saved snapshots' directory names under snapshots/. */
export const SAVED_SNAPSHOT_PREFIX = "saved-";

export function filesLayout(root: string, stateRoot: string = root): FilesLayout {
  const kernelsDir = join(root, "kernels");
  const imagesDir = join(root, "images");
  const sandboxesDir = join(stateRoot, "sandboxes");
  const snapshotsDir = join(stateRoot, "snapshots");
  return {
    root,
    stateRoot,
    kernelsDir,
    imagesDir,
    sandboxesDir,
    snapshotsDir,
    tokenFile: join(stateRoot, "token"),
    connectionsDir: join(stateRoot, "connections"),
    kernelPath: join(kernelsDir, "current", "vmlinux"),
    initrdPath: join(kernelsDir, "current", "initramfs.cpio.gz"),
    microvmKernelPath: join(kernelsDir, "microvm", "vmlinux"),
    imageDir: (template) => join(imagesDir, template),
    imageRootfsTree: (template) => join(imagesDir, template, "rootfs"),
    imageRootfsExt4: (template) => join(imagesDir, template, "rootfs.ext4"),
    imageManifest: (template) => join(imagesDir, template, "manifest.json"),
    sandboxDir: (sandboxId) => join(sandboxesDir, sandboxId),
    snapshotDir: (sandboxId) => join(snapshotsDir, sandboxId),
    savedSnapshotDir: (snapshotId) => join(snapshotsDir, `${SAVED_SNAPSHOT_PREFIX}${snapshotId}`),
  };
}

import { join } from "node:path";

/**
 * Every path the agent and the image builder use, derived from one root (AGENT_FILES_ROOTDIR,
 * default /var/lib/wrenn) so that a second agent on the same machine only needs another root.
 */
export interface FilesLayout {
  root: string;
  kernelsDir: string;
  imagesDir: string;
  sandboxesDir: string;
  snapshotsDir: string;
  tokenFile: string;
  /** Guest kernel (uncompressed ELF with a PVH entry; boots under QEMU microvm and Firecracker). */
  kernelPath: string;
  /** Initramfs that loads the virtio modules the kernel lacks; absent when the kernel has them built in. */
  initrdPath: string;
  imageDir(template: string): string;
  /** The template's root tree: the read-only lower layer of the namespace runtime. */
  imageRootfsTree(template: string): string;
  /** The template's ext4 image: the read-only backing file of each VM's copy-on-write disk. */
  imageRootfsExt4(template: string): string;
  /** JSON manifest written last by the image builder; an image without one is incomplete. */
  imageManifest(template: string): string;
  sandboxDir(sandboxId: string): string;
  snapshotDir(sandboxId: string): string;
}

export function filesLayout(root: string): FilesLayout {
  const kernelsDir = join(root, "kernels");
  const imagesDir = join(root, "images");
  const sandboxesDir = join(root, "sandboxes");
  const snapshotsDir = join(root, "snapshots");
  return {
    root,
    kernelsDir,
    imagesDir,
    sandboxesDir,
    snapshotsDir,
    tokenFile: join(root, "token"),
    kernelPath: join(kernelsDir, "current", "vmlinux"),
    initrdPath: join(kernelsDir, "current", "initramfs.cpio.gz"),
    imageDir: (template) => join(imagesDir, template),
    imageRootfsTree: (template) => join(imagesDir, template, "rootfs"),
    imageRootfsExt4: (template) => join(imagesDir, template, "rootfs.ext4"),
    imageManifest: (template) => join(imagesDir, template, "manifest.json"),
    sandboxDir: (sandboxId) => join(sandboxesDir, sandboxId),
    snapshotDir: (sandboxId) => join(snapshotsDir, sandboxId),
  };
}

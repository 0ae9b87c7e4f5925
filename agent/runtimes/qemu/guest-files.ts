import { rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { exists, PARTIAL_SUFFIX } from "../vm-files.js";
import { QemuRuntimeError } from "./errors.js";

/** Files the runtime keeps in the sandbox directory. */
export const QEMU_FILES = {
  disk: "disk.qcow2",
  qmpSocket: "qmp.sock",
  pidFile: "qemu.pid",
  /** QEMU's own stdout/stderr (start-up errors, failed migrations). Kept after stop. */
  qemuLog: "qemu.log",
  /** The guest's serial console. Kept after stop. */
  console: "console.log",
  /**
   * QEMU's working directory, owned by the uid QEMU runs as: `exec:` migrations write the snapshot's
   * memory stream here (as `memory.partial`) before it moves into the snapshot directory.
   */
  workDir: "qemu-work",
  /**
   * Hard link to the template image version the overlay is based on, so that the image builder
   * replacing or removing that version cannot pull the base out from under a running or paused
   * sandbox (the inode lives as long as a link does).
   */
  base: "base.ext4",
  /** Hard links to the kernel and initramfs version the guest booted, for the same reason. */
  kernel: "vmlinux",
  initrd: "initramfs.cpio.gz",
} as const;

/** The base image, kernel and initramfs links kept with a snapshot (same names as in the sandbox directory). */
export const SNAPSHOT_LINKS = { base: "base.ext4", kernel: "vmlinux", initrd: "initramfs.cpio.gz" } as const;

/** Where an `exec:` migration writes the memory stream, in QEMU's working directory. */
export const PARTIAL_MEMORY = "memory.partial";

/** First uid of the range QEMU processes run as; far above login users and the usual subuid ranges. */
const GUEST_UID_BASE = 1_500_000_000;
const GUEST_UID_SPAN = 100_000_000;

/**
 * The uid (and gid) a sandbox's QEMU drops to: derived from the sandbox id, so it is the same after a
 * restore or an agent restart, and different between sandboxes so that one QEMU cannot signal or
 * trace another's.
 */
export function guestUid(sandboxId: string): number {
  // FNV-1a: stable and well spread over the short ids.
  let hash = 0x811c9dc5;
  for (let i = 0; i < sandboxId.length; i++) {
    hash ^= sandboxId.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return GUEST_UID_BASE + (hash % GUEST_UID_SPAN);
}

/** Removes everything the runtime puts in the sandbox directory except the logs. */
export async function removeGuestFiles(sandboxDir: string): Promise<void> {
  for (const file of [
    QEMU_FILES.disk,
    `${QEMU_FILES.disk}${PARTIAL_SUFFIX}`,
    QEMU_FILES.base,
    QEMU_FILES.kernel,
    QEMU_FILES.initrd,
    QEMU_FILES.qmpSocket,
    QEMU_FILES.pidFile,
    QEMU_FILES.workDir,
  ]) {
    await rm(join(sandboxDir, file), { recursive: true, force: true });
  }
}

/** Size, mtime and inode: what tells the backing image a snapshot was taken on from a rebuilt one. */
export async function fileIdentity(path: string): Promise<{ size: number; mtimeMs: number; ino: number }> {
  const info = await stat(path);
  return { size: info.size, mtimeMs: info.mtimeMs, ino: info.ino };
}

export async function requireFile(
  path: string,
  reason: "KERNEL_MISSING" | "IMAGE_MISSING" | "SNAPSHOT_INCOMPATIBLE",
  what: string,
): Promise<void> {
  if (!(await exists(path))) throw new QemuRuntimeError(reason, `${what} not found at ${path}`);
}

import { open, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { QemuRuntimeError } from "./errors.js";

/**
 * The files of a QEMU pause-to-disk snapshot and their checks. A snapshot directory holds the
 * guest's memory and device state as a QEMU migration stream, the guest's qcow2 disk overlay at the
 * same instant, and a manifest with everything needed to rebuild the exact command line QEMU must
 * be restored with (same machine, memory size, devices, MAC).
 */

export const SNAPSHOT_MANIFEST_FILE = "qemu-snapshot.json";
export const SNAPSHOT_MEMORY_FILE = "memory";
export const SNAPSHOT_DISK_FILE = "disk.qcow2";

const manifestSchema = z.object({
  format: z.literal("wrenn-qemu-snapshot/1"),
  vcpus: z.number().int().positive(),
  memoryMb: z.number().int().positive(),
  kvm: z.boolean(),
  tscKhz: z.number().int().positive().optional(),
  kernelPath: z.string().min(1),
  initrdPath: z.string().min(1).optional(),
  kernelCmdline: z.string(),
  mac: z.string(),
  backingFile: z.string().min(1),
  /** Identity of the backing image when the guest started: an overlay is only valid on that exact file. */
  backingIdentity: z.object({ size: z.number(), mtimeMs: z.number(), ino: z.number() }).optional(),
  qemuVersion: z.string().optional(),
  createdAt: z.string(),
});

export type QemuSnapshotManifest = z.infer<typeof manifestSchema>;

export function serializeManifest(manifest: QemuSnapshotManifest): string {
  return `${JSON.stringify(manifestSchema.parse(manifest), null, 2)}\n`;
}

/** Parses a manifest; throws SNAPSHOT_CORRUPT naming the first bad field. */
export function parseManifest(text: string, where: string): QemuSnapshotManifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new QemuRuntimeError("SNAPSHOT_CORRUPT", `snapshot manifest ${where} is not valid JSON`, { cause: err });
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new QemuRuntimeError(
      "SNAPSHOT_CORRUPT",
      `snapshot manifest ${where} is invalid: ${issue?.path.join(".") || "(root)"}: ${issue?.message ?? "unknown"}`,
    );
  }
  return parsed.data;
}

/** QEMU migration streams start with "QEVM" and stream version 3. */
export function isMigrationStreamHeader(header: Uint8Array): boolean {
  if (header.length < 8) return false;
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  return view.getUint32(0) === 0x5145564d && view.getUint32(4) === 3;
}

/** qcow2 images start with "QFI\xfb". */
export function isQcow2Header(header: Uint8Array): boolean {
  if (header.length < 4) return false;
  return header[0] === 0x51 && header[1] === 0x46 && header[2] === 0x49 && header[3] === 0xfb;
}

async function readHeader(path: string, bytes: number): Promise<Uint8Array | undefined> {
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(path, "r");
    const buffer = new Uint8Array(bytes);
    const { bytesRead } = await handle.read(buffer, 0, bytes, 0);
    return buffer.subarray(0, bytesRead);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  } finally {
    await handle?.close();
  }
}

/**
 * Checks that `dir` holds a complete QEMU snapshot before QEMU is started on it, so that a missing
 * or damaged snapshot gives a clear error instead of a QEMU exit status. Damage deeper inside the
 * memory stream is still only found by QEMU itself while loading.
 */
export async function readSnapshot(dir: string): Promise<QemuSnapshotManifest> {
  const manifestPath = join(dir, SNAPSHOT_MANIFEST_FILE);
  let text: string;
  try {
    text = await readFile(manifestPath, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw new QemuRuntimeError(
        "SNAPSHOT_MISSING",
        `no QEMU snapshot in ${dir} (${SNAPSHOT_MANIFEST_FILE} is missing)`,
      );
    }
    throw err;
  }
  const manifest = parseManifest(text, manifestPath);

  const memoryPath = join(dir, SNAPSHOT_MEMORY_FILE);
  const memoryHeader = await readHeader(memoryPath, 8);
  if (memoryHeader === undefined) {
    throw new QemuRuntimeError("SNAPSHOT_MISSING", `snapshot memory file ${memoryPath} is missing`);
  }
  if (!isMigrationStreamHeader(memoryHeader)) {
    throw new QemuRuntimeError("SNAPSHOT_CORRUPT", `snapshot memory file ${memoryPath} is not a QEMU migration stream`);
  }
  const memoryBytes = (await stat(memoryPath)).size;
  // Zero pages compress to almost nothing, but device state and touched RAM never fit in less than a few KiB.
  if (memoryBytes < 4096) {
    throw new QemuRuntimeError(
      "SNAPSHOT_CORRUPT",
      `snapshot memory file ${memoryPath} is truncated (${memoryBytes} bytes)`,
    );
  }

  const diskPath = join(dir, SNAPSHOT_DISK_FILE);
  const diskHeader = await readHeader(diskPath, 4);
  if (diskHeader === undefined) {
    throw new QemuRuntimeError("SNAPSHOT_MISSING", `snapshot disk ${diskPath} is missing`);
  }
  if (!isQcow2Header(diskHeader)) {
    throw new QemuRuntimeError("SNAPSHOT_CORRUPT", `snapshot disk ${diskPath} is not a qcow2 image`);
  }
  return manifest;
}

import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { QemuRuntimeError } from "./errors.js";
import {
  isMigrationStreamHeader,
  isQcow2Header,
  parseManifest,
  type QemuSnapshotManifest,
  readSnapshot,
  SNAPSHOT_DISK_FILE,
  SNAPSHOT_MANIFEST_FILE,
  SNAPSHOT_MEMORY_FILE,
  serializeManifest,
} from "./snapshot-files.js";

const manifest: QemuSnapshotManifest = {
  format: "wrenn-qemu-snapshot/1",
  vcpus: 1,
  memoryMb: 256,
  kvm: false,
  tscKhz: 2445424,
  kernelPath: "/k/vmlinux",
  initrdPath: "/k/initramfs.cpio.gz",
  kernelCmdline: "console=ttyS0",
  mac: "02:fc:00:00:00:01",
  backingFile: "/i/rootfs.ext4",
  qemuVersion: "7.2.22",
  createdAt: "2026-11-29T09:00:00.000Z",
};

const migrationStream = () => {
  const bytes = new Uint8Array(8192);
  bytes.set([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3]);
  return bytes;
};
const qcow2 = () => {
  const bytes = new Uint8Array(512);
  bytes.set([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]);
  return bytes;
};

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "wrenn-qemu-snapfiles-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function snapshotDir(
  name: string,
  files: { manifest?: string; memory?: Uint8Array; disk?: Uint8Array },
): Promise<string> {
  const dir = join(root, name);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  if (files.manifest !== undefined) await writeFile(join(dir, SNAPSHOT_MANIFEST_FILE), files.manifest);
  if (files.memory) await writeFile(join(dir, SNAPSHOT_MEMORY_FILE), files.memory);
  if (files.disk) await writeFile(join(dir, SNAPSHOT_DISK_FILE), files.disk);
  return dir;
}

async function reasonOf(promise: Promise<unknown>): Promise<string> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(QemuRuntimeError);
  return `${(err as QemuRuntimeError).reason}: ${(err as Error).message}`;
}

describe("snapshot manifest", () => {
  it("round-trips", () => {
    expect(parseManifest(serializeManifest(manifest), "m")).toEqual(manifest);
  });

  it("names the bad field", () => {
    const bad = JSON.stringify({ ...manifest, memoryMb: -1 });
    expect(() => parseManifest(bad, "m.json")).toThrow(/m\.json is invalid: memoryMb/);
    expect(() => parseManifest("{", "m.json")).toThrow(/not valid JSON/);
    expect(() => parseManifest(JSON.stringify({ ...manifest, format: "other" }), "m.json")).toThrow(/format/);
  });
});

describe("file headers", () => {
  it("recognises QEMU migration streams and qcow2 images", () => {
    expect(isMigrationStreamHeader(migrationStream())).toBe(true);
    expect(isMigrationStreamHeader(new Uint8Array(8))).toBe(false);
    expect(isMigrationStreamHeader(new Uint8Array([0x51, 0x45]))).toBe(false);
    expect(isQcow2Header(qcow2())).toBe(true);
    expect(isQcow2Header(migrationStream())).toBe(false);
  });
});

describe("readSnapshot", () => {
  it("accepts a complete snapshot", async () => {
    const dir = await snapshotDir("good", {
      manifest: serializeManifest(manifest),
      memory: migrationStream(),
      disk: qcow2(),
    });
    expect(await readSnapshot(dir)).toEqual(manifest);
  });

  it("reports a missing snapshot, memory file or disk as SNAPSHOT_MISSING", async () => {
    expect(await reasonOf(readSnapshot(join(root, "nothing-here")))).toMatch(/^SNAPSHOT_MISSING: no QEMU snapshot/);
    const noMemory = await snapshotDir("no-memory", { manifest: serializeManifest(manifest), disk: qcow2() });
    expect(await reasonOf(readSnapshot(noMemory))).toMatch(/^SNAPSHOT_MISSING: snapshot memory file/);
    const noDisk = await snapshotDir("no-disk", { manifest: serializeManifest(manifest), memory: migrationStream() });
    expect(await reasonOf(readSnapshot(noDisk))).toMatch(/^SNAPSHOT_MISSING: snapshot disk/);
  });

  it("reports damaged files as SNAPSHOT_CORRUPT", async () => {
    const garbage = await snapshotDir("garbage-memory", {
      manifest: serializeManifest(manifest),
      memory: new Uint8Array(8192).fill(7),
      disk: qcow2(),
    });
    expect(await reasonOf(readSnapshot(garbage))).toMatch(/^SNAPSHOT_CORRUPT: .*not a QEMU migration stream/);
    const truncated = await snapshotDir("truncated-memory", {
      manifest: serializeManifest(manifest),
      memory: migrationStream().subarray(0, 100),
      disk: qcow2(),
    });
    expect(await reasonOf(readSnapshot(truncated))).toMatch(/^SNAPSHOT_CORRUPT: .*truncated/);
    const badDisk = await snapshotDir("bad-disk", {
      manifest: serializeManifest(manifest),
      memory: migrationStream(),
      disk: new Uint8Array(512),
    });
    expect(await reasonOf(readSnapshot(badDisk))).toMatch(/^SNAPSHOT_CORRUPT: .*not a qcow2 image/);
    const badManifest = await snapshotDir("bad-manifest", {
      manifest: "not json",
      memory: migrationStream(),
      disk: qcow2(),
    });
    expect(await reasonOf(readSnapshot(badManifest))).toMatch(/^SNAPSHOT_CORRUPT: .*not valid JSON/);
  });
});

import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { copyFileAtomic, linkOrCopy, linkOrReference, moveFile, writeFileAtomic } from "./vm-files.js";

// Two directories on different filesystems (/dev/shm is a tmpfs), so a move between them takes the
// copy path that a snapshot directory on another disk takes.
let disk: string;
let memory: string;

beforeAll(async () => {
  disk = await mkdtemp(join(tmpdir(), "wrenn-vm-files-"));
  memory = await mkdtemp(join("/dev/shm", "wrenn-vm-files-"));
  expect((await stat(disk)).dev).not.toBe((await stat(memory)).dev);
});

afterAll(async () => {
  await rm(disk, { recursive: true, force: true });
  await rm(memory, { recursive: true, force: true });
});

describe("moveFile", () => {
  it("moves within a filesystem and across filesystems, removing the source", async () => {
    for (const target of [disk, memory]) {
      const from = join(disk, "src.bin");
      await writeFile(from, "guest memory");
      await moveFile(from, join(target, "moved.bin"));
      expect(await readFile(join(target, "moved.bin"), "utf8")).toBe("guest memory");
      await expect(stat(from)).rejects.toThrow(/ENOENT/);
    }
  });

  it("across filesystems, a failure leaves the source and no partial file under the destination's name", async () => {
    const from = join(disk, "disk.qcow2");
    await writeFile(from, "overlay");
    // A directory where the file should go: the copy succeeds, the final rename cannot.
    const to = join(memory, "taken");
    await mkdir(to);
    await expect(moveFile(from, to)).rejects.toThrow();
    expect(await readFile(from, "utf8")).toBe("overlay");
    expect((await readdir(memory)).filter((n) => n.includes("partial"))).toEqual([]);
  });
});

describe("copyFileAtomic and writeFileAtomic", () => {
  it("replace the destination whole and leave no partial file", async () => {
    const to = join(memory, "manifest.json");
    await writeFile(to, "old");
    await writeFileAtomic(to, "new", 0o600);
    expect(await readFile(to, "utf8")).toBe("new");
    expect((await stat(to)).mode & 0o777).toBe(0o600);
    await writeFile(join(disk, "src"), "copied");
    await copyFileAtomic(join(disk, "src"), to);
    expect(await readFile(to, "utf8")).toBe("copied");
    expect((await readdir(memory)).filter((n) => n.endsWith(".partial"))).toEqual([]);
  });

  it("keep the old destination when the copy fails", async () => {
    const to = join(memory, "keep.json");
    await writeFile(to, "old");
    await expect(copyFileAtomic(join(disk, "absent"), to)).rejects.toThrow(/ENOENT/);
    expect(await readFile(to, "utf8")).toBe("old");
  });
});

describe("links", () => {
  it("link within a filesystem; across, linkOrReference answers the target and linkOrCopy copies", async () => {
    const target = join(disk, "base.ext4");
    await writeFile(target, "image");
    const sameFs = join(disk, "link.ext4");
    expect(await linkOrReference(target, sameFs)).toBe(sameFs);
    expect((await stat(sameFs)).ino).toBe((await stat(target)).ino);
    expect(await linkOrReference(target, join(memory, "link.ext4"))).toBe(target);

    await linkOrCopy(target, join(memory, "copy.ext4"));
    expect(await readFile(join(memory, "copy.ext4"), "utf8")).toBe("image");
    await linkOrCopy(target, join(disk, "hard.ext4"));
    expect((await stat(join(disk, "hard.ext4"))).ino).toBe((await stat(target)).ino);
  });
});

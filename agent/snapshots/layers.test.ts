import { lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createExec } from "../exec.js";
import { createLogger } from "../logger.js";
import { copyLayer, shiftOwners } from "./layers.js";

/**
 * The copy of an overlay's writable layer that a snapshot is, on real overlayfs (needs root, as the
 * agent does): a file deleted from the lower layer stays deleted, a directory replaced wholesale stays
 * opaque, and owners move between uid ranges.
 */

const exec = createExec(createLogger("error"));
const BASE = 0x70000000;

describe("snapshot layers on overlayfs", () => {
  let root: string;
  const mounted: string[] = [];
  const overlay = async (lower: string, name: string) => {
    const dirs = { upper: join(root, `${name}-upper`), work: join(root, `${name}-work`), merged: join(root, name) };
    await Promise.all(Object.values(dirs).map((d) => mkdir(d, { recursive: true })));
    await execa("mount", [
      "-t",
      "overlay",
      "overlay",
      "-o",
      `lowerdir=${lower},upperdir=${dirs.upper},workdir=${dirs.work}`,
      dirs.merged,
    ]);
    mounted.push(dirs.merged);
    return dirs;
  };

  beforeEach(async () => {
    if (process.getuid?.() !== 0) throw new Error("these tests need root (overlay mounts), as the agent does");
    root = await mkdtemp(join(tmpdir(), "wrenn-layers-"));
    const template = join(root, "template");
    await mkdir(join(template, "etc", "conf.d"), { recursive: true });
    await writeFile(join(template, "etc", "issue.net"), "template\n");
    await writeFile(join(template, "etc", "conf.d", "old"), "old\n");
    await writeFile(join(template, "keep"), "kept\n");
  });
  afterEach(async () => {
    for (const m of mounted.splice(0).reverse()) await execa("umount", ["-l", m]).catch(() => {});
    await rm(root, { recursive: true, force: true });
  });

  it("keeps whiteouts and opaque directories, so deleted template files stay deleted in a copy", async () => {
    const template = join(root, "template");
    const source = await overlay(template, "source");
    await rm(join(source.merged, "etc", "issue.net"));
    await rm(join(source.merged, "etc", "conf.d"), { recursive: true });
    await mkdir(join(source.merged, "etc", "conf.d"));
    await writeFile(join(source.merged, "etc", "conf.d", "new"), "new\n");
    await writeFile(join(source.merged, "added"), "added\n");
    // The whiteout really is a 0/0 character device in the upper directory.
    expect((await lstat(join(source.upper, "etc", "issue.net"))).isCharacterDevice()).toBe(true);

    const snapshot = join(root, "snapshot");
    await copyLayer(exec, source.upper, snapshot);
    const copy = await overlay(template, "copy");
    // A new guest's writable layer starts as the copy (what the runtimes do at start).
    await rm(copy.upper, { recursive: true });
    await execa("umount", [copy.merged]);
    mounted.pop();
    await copyLayer(exec, snapshot, copy.upper);
    await execa("mount", [
      "-t",
      "overlay",
      "overlay",
      "-o",
      `lowerdir=${template},upperdir=${copy.upper},workdir=${copy.work}`,
      copy.merged,
    ]);
    mounted.push(copy.merged);
    expect(await readdir(join(copy.merged, "etc"))).toEqual(["conf.d"]);
    expect(await readdir(join(copy.merged, "etc", "conf.d"))).toEqual(["new"]);
    expect(await readFile(join(copy.merged, "added"), "utf8")).toBe("added\n");
    expect(await readFile(join(copy.merged, "keep"), "utf8")).toBe("kept\n");
    // Writes to the copy stay out of the snapshot and the source.
    await writeFile(join(copy.merged, "mine"), "x");
    expect(await readdir(snapshot)).not.toContain("mine");
    expect(await readdir(source.merged)).not.toContain("mine");
  });

  it("moves owners in a uid range to another and leaves others alone", async () => {
    const tree = join(root, "tree");
    await mkdir(join(tree, "home"), { recursive: true });
    await writeFile(join(tree, "home", "f"), "x");
    await writeFile(join(tree, "outsider"), "x");
    await execa("chown", ["-R", `${BASE}:${BASE + 1000}`, tree]);
    await execa("chown", ["-h", "123:123", join(tree, "outsider")]);
    await execa("chown", ["-h", `${BASE + 1000}:${BASE + 1000}`, join(tree, "home", "f")]);
    await writeFile(join(tree, "setuid"), "x");
    await execa("chown", ["-h", `${BASE}:${BASE}`, join(tree, "setuid")]);
    await execa("chmod", ["4755", join(tree, "setuid")]);
    await shiftOwners(tree, BASE, 0, 65536);
    // A guest's set-user-id program stays one (chown alone would clear the bit).
    expect((await lstat(join(tree, "setuid"))).mode & 0o7777).toBe(0o4755);
    expect(await lstat(tree)).toMatchObject({ uid: 0, gid: 1000 });
    expect(await lstat(join(tree, "home", "f"))).toMatchObject({ uid: 1000, gid: 1000 });
    expect(await lstat(join(tree, "outsider"))).toMatchObject({ uid: 123, gid: 123 });
  });
});

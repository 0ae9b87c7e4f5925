import { execFileSync } from "node:child_process";
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createExec } from "../exec.js";
import { noopLogger } from "../logger.js";
import { mergeLayer } from "./merge.js";

/**
 * The merge of a build's writable layer over a template tree, on real files: whiteouts and opaque
 * directories (as overlayfs writes them; root makes them here) delete what the base had, a file may
 * replace a directory and the reverse, and the base's files (hard-linked into the result) never change.
 */
const isRoot = process.getuid?.() === 0;

describe.runIf(isRoot)("mergeLayer", () => {
  let dir: string;
  const exec = createExec(noopLogger);
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "wrenn-merge-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("applies files, whiteouts, opaque directories and type changes, leaving the base as it was", async () => {
    const base = join(dir, "base");
    const layer = join(dir, "layer");
    const out = join(dir, "out");
    for (const d of ["d", "g", "keep", "h"]) await mkdir(join(base, d), { recursive: true });
    await writeFile(join(base, "a"), "deleted later");
    await writeFile(join(base, "d", "x"), "hidden by opaque");
    await writeFile(join(base, "f"), "file becomes dir");
    await writeFile(join(base, "g", "z"), "old z");
    await writeFile(join(base, "keep", "k"), "kept");
    await writeFile(join(base, "h", "inner"), "dir becomes file");

    await mkdir(join(layer, "d"), { recursive: true });
    await mkdir(join(layer, "f"), { recursive: true });
    await mkdir(join(layer, "g"), { recursive: true });
    execFileSync("mknod", [join(layer, "a"), "c", "0", "0"]);
    execFileSync("setfattr", ["-n", "trusted.overlay.opaque", "-v", "y", join(layer, "d")]);
    execFileSync("setfattr", ["-n", "trusted.overlay.opaque", "-v", "y", join(layer, "f")]);
    await writeFile(join(layer, "d", "n"), "new in opaque");
    await writeFile(join(layer, "f", "inner"), "now a dir");
    await writeFile(join(layer, "g", "z"), "new z");
    await writeFile(join(layer, "h"), "now a file");
    await writeFile(join(layer, "new.txt"), "brand new");

    await mergeLayer(exec, base, layer, out);

    expect((await readdir(out)).sort()).toEqual(["d", "f", "g", "h", "keep", "new.txt"]);
    expect(await readdir(join(out, "d"))).toEqual(["n"]);
    expect(await readFile(join(out, "f", "inner"), "utf8")).toBe("now a dir");
    expect(await readFile(join(out, "g", "z"), "utf8")).toBe("new z");
    expect(await readFile(join(out, "h"), "utf8")).toBe("now a file");
    expect(await readFile(join(out, "keep", "k"), "utf8")).toBe("kept");
    // Overlay attributes stay behind.
    expect(execFileSync("getfattr", ["-d", "-m", "trusted.overlay.", join(out, "d")]).toString()).toBe("");
    // The base is untouched, and unchanged files share its inodes (no data copied).
    expect(await readFile(join(base, "g", "z"), "utf8")).toBe("old z");
    expect(await readFile(join(base, "a"), "utf8")).toBe("deleted later");
    expect(await readdir(join(base, "d"))).toEqual(["x"]);
    expect((await lstat(join(out, "keep", "k"))).ino).toBe((await lstat(join(base, "keep", "k"))).ino);
  });

  it("refuses a layer with a directory redirect (a renamed base directory)", async () => {
    const base = join(dir, "base");
    const layer = join(dir, "layer");
    await mkdir(join(base, "old"), { recursive: true });
    await mkdir(join(layer, "new"), { recursive: true });
    execFileSync("setfattr", ["-n", "trusted.overlay.redirect", "-v", "/old", join(layer, "new")]);
    await expect(mergeLayer(exec, base, layer, join(dir, "out"))).rejects.toThrow(/renamed a directory/);
  });
});

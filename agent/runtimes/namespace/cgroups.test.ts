import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  cgroupDirs,
  createCgroups,
  detectCgroupLayout,
  pidsMaxFor,
  sandboxCgroups,
  setCgroupLimits,
} from "./cgroups.js";

let dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  dirs = [];
});

/** A directory shaped like /sys/fs/cgroup (plain files: what the code reads to decide is what matters). */
async function fakeCgroupRoot(files: Record<string, string>): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), "wrenn-cgroups-"));
  dirs.push(root);
  for (const [path, text] of Object.entries(files)) {
    await mkdir(join(root, path, ".."), { recursive: true });
    await writeFile(join(root, path), text);
  }
  return root;
}

describe("namespace runtime cgroups", () => {
  it("limits tasks by memory: one per MiB, between 256 and 32768", () => {
    expect(pidsMaxFor(512)).toBe(512);
    expect(pidsMaxFor(64)).toBe(256);
    expect(pidsMaxFor(4096)).toBe(4096);
    expect(pidsMaxFor(1 << 20)).toBe(32_768);
  });

  it("on a hybrid host, puts a sandbox in the v1 pids hierarchy and writes pids.max there", async () => {
    const root = await fakeCgroupRoot({
      "memory/cgroup.procs": "",
      "cpu/cgroup.procs": "",
      "pids/cgroup.procs": "",
      "unified/cgroup.procs": "",
      "blkio/cgroup.procs": "",
    });
    const layout = await detectCgroupLayout(root);
    expect(layout.kind).toBe("hybrid");
    expect(layout.pidsRoot).toBe(join(root, "pids"));
    // No blkio.weight (mq-deadline): no IO weight, and no blkio group to make.
    expect(layout.ioWeightRoot).toBeUndefined();
    const groups = sandboxCgroups(layout, "wrenn-t", "sbx");
    expect(groups.pids).toBe(join(root, "pids/wrenn-t/sbx"));
    expect(cgroupDirs(groups)).toContain(join(root, "pids/wrenn-t/sbx"));
    await createCgroups(layout, groups, { memoryMb: 512, vcpus: 1, pidsMax: 300 });
    expect(await readFile(join(root, "pids/wrenn-t/sbx/pids.max"), "utf8")).toBe("300");
    expect(await readFile(join(root, "memory/wrenn-t/sbx/memory.limit_in_bytes"), "utf8")).toBe(String(512 * 2 ** 20));
    await setCgroupLimits(layout, groups, { memoryMb: 512, vcpus: 1, pidsMax: 400 });
    expect(await readFile(join(root, "pids/wrenn-t/sbx/pids.max"), "utf8")).toBe("400");
  });

  it("sets blkio.weight where the v1 hierarchy has one, and pids.max and io.weight on unified hosts", async () => {
    const hybrid = await fakeCgroupRoot({
      "memory/cgroup.procs": "",
      "cpu/cgroup.procs": "",
      "blkio/cgroup.procs": "",
      "blkio/blkio.weight": "500",
    });
    const hl = await detectCgroupLayout(hybrid);
    const hg = sandboxCgroups(hl, "wrenn-t", "sbx");
    await createCgroups(hl, hg, { memoryMb: 256, vcpus: 1 });
    expect(await readFile(join(hybrid, "blkio/wrenn-t/sbx/blkio.weight"), "utf8")).toBe("100");
    expect(hg.pids).toBeUndefined();

    const unified = await fakeCgroupRoot({ "cgroup.controllers": "cpuset cpu io memory pids" });
    const ul = await detectCgroupLayout(unified);
    expect(ul.kind).toBe("unified");
    const ug = sandboxCgroups(ul, "wrenn-t", "sbx");
    await createCgroups(ul, ug, { memoryMb: 256, vcpus: 2, pidsMax: 256 });
    expect(await readFile(join(unified, "wrenn-t/cgroup.subtree_control"), "utf8")).toBe("+memory +cpu +pids +io");
    expect(await readFile(join(unified, "wrenn-t/sbx/pids.max"), "utf8")).toBe("256");
    expect(await readFile(join(unified, "wrenn-t/sbx/io.weight"), "utf8")).toBe("default 50");
  });
});

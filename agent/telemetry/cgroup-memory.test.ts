import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { readCgroupMemory } from "./sampler.js";

// The files as the kernel writes them (cgroup v1 and v2 memory controllers), in a scratch directory.
const dirs: string[] = [];
async function cgroupDir(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "wrenn-cgmem-"));
  dirs.push(dir);
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  return dir;
}
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

describe("a sandbox's memory from its cgroup", () => {
  it("reads cgroup v1: usage minus inactive file pages, the limit as total", async () => {
    const dir = await cgroupDir({
      "memory.usage_in_bytes": "104857600\n",
      "memory.limit_in_bytes": "536870912\n",
      "memory.stat": "cache 30000000\nrss 70000000\ntotal_cache 31457280\ntotal_inactive_file 20971520\n",
    });
    expect(await readCgroupMemory(dir)).toEqual({ mem_used: 83886080, mem_total: 536870912, mem_cache: 31457280 });
  });

  it("reads cgroup v2", async () => {
    const dir = await cgroupDir({
      "memory.current": "52428800\n",
      "memory.max": "268435456\n",
      "memory.stat": "anon 40000000\nfile 12428800\ninactive_file 10485760\n",
    });
    expect(await readCgroupMemory(dir)).toEqual({ mem_used: 41943040, mem_total: 268435456, mem_cache: 12428800 });
  });

  it("gives nothing for a cgroup without a limit or without the files, so envd's own figures stand", async () => {
    expect(
      await readCgroupMemory(await cgroupDir({ "memory.current": "1000\n", "memory.max": "max\n" })),
    ).toBeUndefined();
    expect(
      await readCgroupMemory(
        await cgroupDir({ "memory.usage_in_bytes": "1000\n", "memory.limit_in_bytes": "9223372036854771712\n" }),
      ),
    ).toBeUndefined();
    expect(await readCgroupMemory(await cgroupDir({}))).toBeUndefined();
  });
});

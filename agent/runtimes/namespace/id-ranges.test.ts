import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { claimIdRange, FIRST_ID, idRange, RANGES, releaseIdRange } from "./id-ranges.js";

let work: string;
beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), "wrenn-idranges-"));
});
afterEach(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("uid ranges of namespace sandboxes", () => {
  it("gives each live sandbox its own 65536 host ids between 0x70000000 and 2^31", async () => {
    const claims = join(work, "claims");
    const owners = await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        const dir = join(work, `sbx${i}`);
        await mkdir(dir);
        return dir;
      }),
    );
    const ranges = await Promise.all(owners.map((o) => claimIdRange(o, claims)));
    expect(new Set(ranges.map((r) => r.index)).size).toBe(40);
    for (const r of ranges) {
      expect(r.base).toBeGreaterThanOrEqual(FIRST_ID);
      expect(r.base + 65535).toBeLessThanOrEqual(2 ** 31 - 1);
      expect(r.base).toBe(idRange(r.index).base);
    }
    expect(await readFile(join(claims, String(ranges[0]?.index), "owner"), "utf8")).toBe(owners[0]);
    for (const r of ranges) await releaseIdRange(r, claims);
    expect(await readdir(claims)).toEqual([]);
    expect(() => idRange(RANGES)).toThrow();
  });

  it("reuses a claim whose sandbox directory is gone, and keeps one whose sandbox lives", async () => {
    const claims = join(work, "claims");
    const gone = join(work, "gone");
    const alive = join(work, "alive");
    await mkdir(alive);
    // Fill every range: half with a live owner, half with a vanished one.
    for (let i = 0; i < RANGES; i++) {
      await mkdir(join(claims, String(i)), { recursive: true });
    }
    for (let i = 0; i < RANGES; i++) await writeFile(join(claims, String(i), "owner"), i === 7 ? gone : alive);
    const fresh = join(work, "new");
    await mkdir(fresh);
    const range = await claimIdRange(fresh, claims);
    expect(range.index).toBe(7);
    await expect(claimIdRange(join(work, "another"), claims)).rejects.toThrow(/in use/);
  }, 60_000);
});

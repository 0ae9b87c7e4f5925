import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { readTemplateEnv } from "./template-env.js";

describe("readTemplateEnv", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });
  async function manifest(content: string): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), "wrenn-template-env-"));
    dirs.push(dir);
    const path = join(dir, "manifest.json");
    await writeFile(path, content);
    return path;
  }

  it("gives the manifest's variables", async () => {
    const path = await manifest(JSON.stringify({ env: { PATH: "/opt/bin:/usr/bin", LANG: "C.UTF-8" } }));
    expect(await readTemplateEnv(path)).toEqual({ PATH: "/opt/bin:/usr/bin", LANG: "C.UTF-8" });
  });

  it("leaves out what an imported image could abuse: odd names, non-strings, huge values, too many", async () => {
    const env: Record<string, unknown> = {
      "BAD NAME": "x",
      "1X": "x",
      "A=B": "x",
      NUM: 5,
      HUGE: "x".repeat(40_000),
      OK: "yes",
    };
    for (let i = 0; i < 400; i++) env[`V${i}`] = String(i);
    const got = await readTemplateEnv(await manifest(JSON.stringify({ env })));
    expect(got.OK).toBe("yes");
    expect(Object.keys(got)).toHaveLength(256);
    for (const name of ["BAD NAME", "1X", "A=B", "NUM", "HUGE"]) expect(got[name]).toBeUndefined();
  });

  it("gives none for a manifest without env, with a wrong shape, unreadable or missing", async () => {
    expect(await readTemplateEnv(await manifest(JSON.stringify({})))).toEqual({});
    expect(await readTemplateEnv(await manifest(JSON.stringify({ env: ["A=1"] })))).toEqual({});
    expect(await readTemplateEnv(await manifest("not json"))).toEqual({});
    expect(await readTemplateEnv("/nonexistent/manifest.json")).toEqual({});
  });
});

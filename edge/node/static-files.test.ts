import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { staticFiles } from "./static-files.js";

describe("static files from one directory", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "wrenn-static-"));
    await writeFile(join(dir, "app.js"), "console.log(1)");
    await writeFile(join(dir, "secret.env"), "KEY=1");
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it("serves a listed type with its content type and cache policy, then from memory", async () => {
    const serve = staticFiles(dir, { ".js": "text/javascript; charset=utf-8" }, "no-cache");
    const res = await serve("app.js");
    expect(res?.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(res?.headers.get("cache-control")).toBe("no-cache");
    expect(await res?.text()).toBe("console.log(1)");
    await writeFile(join(dir, "app.js"), "changed");
    expect(await (await serve("app.js"))?.text()).toBe("console.log(1)");
  });

  it("answers nothing for unlisted types, sub-paths, traversal and missing files", async () => {
    const serve = staticFiles(dir, { ".js": "text/javascript", ".env": "text/plain" }, "no-cache");
    expect(await staticFiles(dir, { ".js": "text/javascript" }, "no-cache")("secret.env")).toBeUndefined();
    expect(await serve("../x.js")).toBeUndefined();
    expect(await serve("sub/app.js")).toBeUndefined();
    expect(await serve("missing.js")).toBeUndefined();
  });
});

import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { noopLogger } from "../logger.js";
import { BuildRecords, RETENTION_MS } from "./records.js";

describe("build records", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "wrenn-build-records-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("survive a restart: finished ones as they were, running ones as failed, old ones removed", async () => {
    const now = 1_000_000_000_000;
    const before = new BuildRecords(dir, noopLogger);
    const done = await before.create("done", "t", now);
    before.log(done, "info", "a line", now);
    await before.finish(done, { status: "ready", version: "0123456789abcdef" }, now + 10);
    const running = await before.create("running", "t", now);
    before.log(running, "info", "step 0: RUN sleep 600", now);
    await before.flush();
    const old = await before.create("old", "t", now - RETENTION_MS - 60_000);
    await before.finish(old, { status: "error", errorMessage: "x" }, now - RETENTION_MS - 1);

    const after = new BuildRecords(dir, noopLogger);
    await after.load(now + 20);
    expect(after.get("done")).toMatchObject({
      status: "ready",
      version: "0123456789abcdef",
      logs: [{ message: "a line" }],
    });
    expect(after.get("running")).toMatchObject({
      status: "error",
      errorMessage: "the agent restarted during the build",
      errorStep: -1,
    });
    expect(after.get("running")?.logs.map((l) => l.message)).toEqual([
      "step 0: RUN sleep 600",
      "the agent restarted during the build",
    ]);
    expect(after.get("old")).toBeUndefined();
    expect((await readdir(join(dir, "builds", "records"))).sort()).toEqual(["done.json", "running.json"]);
  });
});

import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { filesLayout } from "../layout.js";
import { createLogger } from "../logger.js";
import { assertSnapshotId, SnapshotStore } from "./store.js";

const logger = createLogger("error");

describe("snapshot ids", () => {
  it("accepts the edge's ids and refuses anything that could name another path", () => {
    for (const ok of ["a", "snap_1-2", "x".repeat(64)]) expect(() => assertSnapshotId(ok)).not.toThrow();
    for (const bad of ["", ".", "..", "../x", "a/b", "A", "x".repeat(65), "a b", "a\0", "saved-x/.."]) {
      expect(() => assertSnapshotId(bad), JSON.stringify(bad)).toThrow(/snapshot id must be/);
    }
  });
});

describe("SnapshotStore", () => {
  let root: string;
  let layout: ReturnType<typeof filesLayout>;
  const meta = (snapshotId: string) => ({
    snapshotId,
    sourceSandboxId: "a".repeat(20),
    template: "minimal",
    templateTree: "/var/lib/wrenn/images/versions/minimal-1/rootfs",
    runtime: "namespace" as const,
    keepsMemory: false,
    vcpus: 1,
    memoryMb: 256,
    createdAt: 1,
  });
  const save = async (store: SnapshotStore, id: string) => {
    const { filesDir } = await store.begin(id);
    await mkdir(filesDir);
    await writeFile(join(filesDir, "file"), "x".repeat(10_000));
    return store.commit(meta(id));
  };

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "wrenn-snapshots-"));
    layout = filesLayout(root);
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("commits a snapshot into place with its size, lists it, and reads it back after a restart", async () => {
    const store = new SnapshotStore({ layout, logger });
    const saved = await save(store, "one");
    expect(saved.sizeBytes).toBeGreaterThanOrEqual(10_000);
    expect(await readdir(layout.snapshotsDir)).toEqual(["saved-one"]);
    expect(store.list().map((s) => s.snapshotId)).toEqual(["one"]);

    const again = new SnapshotStore({ layout, logger });
    await again.load();
    expect(again.get("one")).toEqual(saved);
  });

  it("keeps a deleted snapshot's files while it has users and removes them when the last is gone", async () => {
    const store = new SnapshotStore({ layout, logger });
    await save(store, "used");
    await store.delete("used", 2);
    expect(store.get("used")).toBeUndefined();
    expect(store.list()).toEqual([]);
    expect(existsSync(layout.savedSnapshotDir("used"))).toBe(true);
    await expect(store.delete("used", 2)).rejects.toMatchObject({ code: "NOT_FOUND" });

    // The mark survives a restart: the files wait for their users there too.
    const restarted = new SnapshotStore({ layout, logger });
    await restarted.load();
    expect(restarted.get("used")).toBeUndefined();
    await restarted.collect(() => 1);
    expect(existsSync(layout.savedSnapshotDir("used"))).toBe(true);
    await restarted.collect(() => 0);
    expect(existsSync(layout.savedSnapshotDir("used"))).toBe(false);
  });

  it("removes a snapshot without users at once, and half-made ones at load", async () => {
    const store = new SnapshotStore({ layout, logger });
    await save(store, "free");
    await store.delete("free", 0);
    expect(existsSync(layout.savedSnapshotDir("free"))).toBe(false);

    await store.begin("cut-short");
    await mkdir(join(layout.snapshotsDir, "saved-nometa"));
    await mkdir(join(layout.snapshotsDir, "abcdefghij0123456789"), { recursive: true });
    const restarted = new SnapshotStore({ layout, logger });
    await restarted.load();
    expect(restarted.list()).toEqual([]);
    // A pause snapshot (named by its sandbox) is not the store's to touch.
    expect(await readdir(layout.snapshotsDir)).toEqual(["abcdefghij0123456789"]);
  });
});

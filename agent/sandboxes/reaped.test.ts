import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AgentError } from "../errors.js";
import { noopLogger } from "../logger.js";
import { ReapLog, reapLogPath } from "./reaped.js";
import type { SandboxRecord } from "./record.js";

let dir: string;
let file: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "wrenn-reaps-"));
  file = reapLogPath(dir);
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function record(id: string, fields: Partial<SandboxRecord> = {}): SandboxRecord {
  return {
    id,
    template: "minimal",
    runtime: "namespace",
    vcpus: 1,
    memoryMb: 256,
    createdAt: 1,
    endAt: undefined,
    timeoutMs: 1000,
    remainingMs: undefined,
    timeoutAction: "kill",
    timeoutKeepMemory: true,
    pausedWithoutMemory: false,
    metadata: { owner: "test" },
    envVars: { SECRET: "env-secret" },
    accessToken: "token-secret",
    internetAccess: false,
    status: "stopped",
    stopReason: "timeout",
    stoppedAt: 2,
    error: undefined,
    envdVersion: "",
    slot: undefined,
    handle: undefined,
    snapshot: undefined,
    ...fields,
  };
}

describe("ReapLog", () => {
  it("keeps reaps in a file a new log reads back, oldest first and without the sandbox's secrets", async () => {
    const log = new ReapLog({ file, logger: noopLogger });
    await log.load();
    const a = await log.add(record("a".repeat(20)));
    const b = await log.add(record("b".repeat(20), { status: "paused", stopReason: undefined }));
    expect(a.reapId).toMatch(/^reap_[a-z0-9]{16}$/);
    expect(a.reapId).not.toBe(b.reapId);
    const text = await readFile(file, "utf8");
    expect(text).not.toContain("token-secret");
    expect(text).not.toContain("env-secret");
    expect((await stat(file)).mode & 0o777).toBe(0o600);

    const again = new ReapLog({ file, logger: noopLogger });
    await again.load();
    expect(again.pending().map((r) => [r.reapId, r.record.id, r.record.status])).toEqual([
      [a.reapId, "a".repeat(20), "stopped"],
      [b.reapId, "b".repeat(20), "paused"],
    ]);
    expect(again.pending()[0]?.record.metadata).toEqual({ owner: "test" });
  });

  it("drops acknowledged reaps (on disk too), ignores unknown ids, and refuses malformed ones", async () => {
    const log = new ReapLog({ file, logger: noopLogger });
    await log.load();
    const a = await log.add(record("a".repeat(20)));
    const b = await log.add(record("b".repeat(20)));
    expect(await log.acknowledge([a.reapId, "reap_0000000000000000"])).toBe(1);
    expect(await log.acknowledge([a.reapId])).toBe(0);
    await expect(log.acknowledge(["reap_../../etc/pass", b.reapId])).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
      reason: "INVALID_REAP_ID",
    });
    // The refused call changed nothing.
    expect(log.pending().map((r) => r.reapId)).toEqual([b.reapId]);
    const reread = new ReapLog({ file, logger: noopLogger });
    await reread.load();
    expect(reread.pending().map((r) => r.reapId)).toEqual([b.reapId]);
  });

  it("refuses more ids in one call than it can hold", async () => {
    const log = new ReapLog({ file, logger: noopLogger, retention: { maxCount: 2 } });
    await expect(
      log.acknowledge(["reap_0000000000000001", "reap_0000000000000002", "reap_0000000000000003"]),
    ).rejects.toThrow(AgentError);
  });

  it("expires reaps by age and keeps only the newest beyond the count, also after a restart", async () => {
    let now = 1_000_000;
    const clock = () => now;
    const log = new ReapLog({ file, logger: noopLogger, retention: { maxAgeMs: 60_000, maxCount: 3 }, now: clock });
    await log.load();
    const old = await log.add(record("o".repeat(20)));
    now += 30_000;
    const ids = [];
    for (const c of "pqr") ids.push((await log.add(record(c.repeat(20)))).reapId);
    // Four reaps, room for three: the oldest went.
    expect(log.pending().map((r) => r.reapId)).toEqual(ids);
    expect(log.pending().map((r) => r.reapId)).not.toContain(old.reapId);
    now += 61_000;
    const s = await log.add(record("s".repeat(20)));
    // 61 s after the three: past the age limit.
    expect(log.pending().map((r) => r.reapId)).toEqual([s.reapId]);

    now += 61_000;
    const later = new ReapLog({ file, logger: noopLogger, retention: { maxAgeMs: 60_000 }, now: clock });
    await later.load();
    expect(later.pending()).toEqual([]);
    expect(JSON.parse(await readFile(file, "utf8"))).toEqual([]);
  });

  it("moves an unreadable file aside and starts empty", async () => {
    await writeFile(file, "{ not json");
    const log = new ReapLog({ file, logger: noopLogger, now: () => 42 });
    await log.load();
    expect(log.pending()).toEqual([]);
    expect(await readFile(join(dir, "reaps.json.corrupt-42"), "utf8")).toBe("{ not json");
    await log.add(record("a".repeat(20)));
    expect((await readdir(dir)).sort()).toEqual(["reaps.json", "reaps.json.corrupt-42"]);
  });

  it("drops malformed entries of a readable file and keeps the rest", async () => {
    const good = { reapId: "reap_abcdefghij012345", reapedAt: Date.now(), record: record("a".repeat(20)) };
    await writeFile(file, JSON.stringify([good, { reapId: "nope" }, 7]));
    const log = new ReapLog({ file, logger: noopLogger });
    await log.load();
    expect(log.pending().map((r) => r.reapId)).toEqual([good.reapId]);
  });
});

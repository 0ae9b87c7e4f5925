import { describe, expect, it } from "vitest";
import { TelemetryStore } from "./store.js";

const limits = { samplesPerSandbox: 3, logsPerSandbox: 2, keepAfterEndMs: 60_000 };

function sample(sandboxId: string, timeMs: number) {
  return {
    sandboxId,
    timeMs,
    cpuCount: 1,
    cpuUsedPct: timeMs,
    memUsed: 1,
    memTotal: 2,
    memCache: 0,
    diskUsed: 1,
    diskTotal: 2,
  };
}

const log = (sandboxId: string, timeMs: number) => ({
  sandboxId,
  timeMs,
  level: "info" as const,
  message: `at ${timeMs}`,
  fields: {},
});

describe("TelemetryStore", () => {
  it("returns entries after the cursor across sandboxes, oldest first, and moves the cursor past them", () => {
    const store = new TelemetryStore(limits);
    store.addSample(sample("a", 1));
    store.addLog(log("b", 2));
    store.addSample(sample("b", 3));
    const first = store.pull({ epoch: "", afterSeq: 0 });
    expect(first.samples.map((s) => [s.sandboxId, s.seq])).toEqual([
      ["a", 1],
      ["b", 3],
    ]);
    expect(first.logs.map((l) => l.seq)).toEqual([2]);
    expect(first.nextAfter).toBe(3);
    expect(first.more).toBe(false);
    store.addLog(log("a", 4));
    const next = store.pull({ epoch: first.epoch, afterSeq: first.nextAfter });
    expect(next.samples).toEqual([]);
    expect(next.logs.map((l) => l.message)).toEqual(["at 4"]);
    expect(store.pull({ epoch: first.epoch, afterSeq: next.nextAfter }).nextAfter).toBe(4);
  });

  it("a cursor of another epoch (the agent restarted) reads from the start", () => {
    const store = new TelemetryStore(limits);
    store.addSample(sample("a", 1));
    const pulled = store.pull({ epoch: "an-older-agent", afterSeq: 99 });
    expect(pulled.samples).toHaveLength(1);
    expect(pulled.epoch).not.toBe("an-older-agent");
  });

  it("keeps a bounded ring per sandbox: the oldest go first", () => {
    const store = new TelemetryStore(limits);
    for (let t = 1; t <= 5; t++) store.addSample(sample("a", t));
    for (let t = 1; t <= 4; t++) store.addLog(log("a", t));
    const pulled = store.pull({ epoch: "", afterSeq: 0 });
    expect(pulled.samples.map((s) => s.timeMs)).toEqual([3, 4, 5]);
    expect(pulled.logs.map((l) => l.timeMs)).toEqual([3, 4]);
  });

  it("cuts a pull at the limit and says there is more, without skipping anything", () => {
    const store = new TelemetryStore({ ...limits, samplesPerSandbox: 100 });
    for (let t = 1; t <= 10; t++) store.addSample(sample(t % 2 ? "a" : "b", t));
    const seen: number[] = [];
    let cursor = { epoch: "", afterSeq: 0 };
    for (let i = 0; i < 5; i++) {
      const page = store.pull({ ...cursor, limit: 4 });
      seen.push(...page.samples.map((s) => s.timeMs));
      cursor = { epoch: page.epoch, afterSeq: page.nextAfter };
      if (!page.more) break;
    }
    expect(seen).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it("a pull of some sandboxes leaves the cursor for the full pull", () => {
    const store = new TelemetryStore(limits);
    store.addSample(sample("a", 1));
    store.addSample(sample("b", 2));
    const some = store.pull({ epoch: "", afterSeq: 0, sandboxIds: ["b"] });
    expect(some.samples.map((s) => s.sandboxId)).toEqual(["b"]);
    expect(some.nextAfter).toBe(0);
  });

  it("drops the rings of a stopped sandbox once nothing was written for keepAfterEndMs", () => {
    let now = 0;
    const store = new TelemetryStore(limits, () => now);
    store.addSample(sample("gone", 1));
    store.addSample(sample("live", 1));
    now = 30_000;
    expect(store.prune(() => false)).toBe(0);
    now = 61_000;
    expect(store.prune((id) => id === "live")).toBe(1);
    expect(store.pull({ epoch: "", afterSeq: 0 }).samples.map((s) => s.sandboxId)).toEqual(["live"]);
  });
});

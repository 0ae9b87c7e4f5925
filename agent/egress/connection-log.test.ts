import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { noopLogger } from "../logger.js";
import { type ConnectionDecision, type ConnectionEntry, ConnectionLog } from "./connection-log.js";

const SB = "a1b2c3d4e5f6g7h8i9j0";
const OTHER = "zzzzzzzzzzzzzzzzzzzz";

let dir: string;
let now: number;
const clock = { now: () => now };

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "wrenn-connlog-"));
  now = 1_700_000_000_000;
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const tcp = (address: string, verdict: "allowed" | "denied" = "allowed"): ConnectionDecision => ({
  protocol: "tcp",
  address,
  port: 443,
  name: "a.example.test",
  nameSource: "sni",
  verdict,
  rule: verdict === "allowed" ? "*.example.test" : "0.0.0.0/0",
  list: verdict === "allowed" ? "allowOut" : "denyOut",
});

const newLog = (capacity?: number) => new ConnectionLog({ dir, logger: noopLogger, clock, capacity });

describe("ConnectionLog", () => {
  it("numbers entries per sandbox, filters and pages", async () => {
    const log = newLog();
    for (let i = 0; i < 5; i++) {
      now += 1000;
      await log.append(SB, tcp(`192.88.99.${i}`, i % 2 === 0 ? "allowed" : "denied"));
    }
    await log.append(SB, { ...tcp("192.88.99.9"), protocol: "dns", port: 53, nameSource: "dns" });
    const other = await log.append(OTHER, tcp("192.88.99.1"));
    expect(other.seq).toBe(1);

    const all = await log.list(SB, { limit: 100 });
    expect(all.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    expect((await log.list(SB, { limit: 2 })).map((e) => e.seq)).toEqual([1, 2]);
    expect((await log.list(SB, { after: 2, limit: 2 })).map((e) => e.seq)).toEqual([3, 4]);
    expect((await log.list(SB, { limit: 10, verdict: "denied" })).map((e) => e.seq)).toEqual([2, 4]);
    expect((await log.list(SB, { limit: 10, protocol: "dns" })).map((e) => e.seq)).toEqual([6]);
    expect((await log.list(SB, { limit: 10, since: all[3]?.time })).map((e) => e.seq)).toEqual([4, 5, 6]);
    expect(await log.list("b".repeat(20), { limit: 10 })).toEqual([]);
    await expect(log.list("../etc", { limit: 1 })).rejects.toThrow(/sandbox id/);
  });

  it("completes connections and survives a restart (reloaded from its file, seq continues)", async () => {
    const log = newLog();
    const first = await log.append(SB, tcp("192.88.99.1"));
    await log.append(SB, tcp("192.88.99.2", "denied"));
    now += 5000;
    await log.complete(SB, first.seq, { bytesOut: 100, bytesIn: 2000 });
    await log.flush();

    const restarted = newLog();
    const entries = await restarted.list(SB, { limit: 10 });
    expect(entries).toHaveLength(2);
    expect(entries[0]).toMatchObject({ seq: 1, bytesOut: 100, bytesIn: 2000, endedAt: now, verdict: "allowed" });
    expect(entries[1]).toMatchObject({ seq: 2, verdict: "denied", rule: "0.0.0.0/0" });
    expect((await restarted.append(SB, tcp("192.88.99.3"))).seq).toBe(3);
  });

  it("keeps the last `capacity` entries, in memory and in its compacted file", async () => {
    const log = newLog(10);
    for (let i = 0; i < 45; i++) {
      await log.append(SB, tcp("192.88.99.1"));
      if (i % 7 === 0) await log.flush();
    }
    await log.flush();
    const kept = await log.list(SB, { limit: 100 });
    expect(kept.length).toBeGreaterThanOrEqual(10);
    expect(kept.at(-1)?.seq).toBe(45);
    const lines = (await readFile(join(dir, `${SB}.jsonl`), "utf8")).trim().split("\n");
    expect(lines.length).toBeLessThanOrEqual(30);
    const reloaded = await newLog(10).list(SB, { limit: 100 });
    expect(reloaded.map((e) => e.seq)).toEqual([36, 37, 38, 39, 40, 41, 42, 43, 44, 45]);
  });

  it("ignores a line torn by a crash", async () => {
    const log = newLog();
    await log.append(SB, tcp("192.88.99.1"));
    await log.flush();
    const { appendFile } = await import("node:fs/promises");
    await appendFile(join(dir, `${SB}.jsonl`), '{"seq":2,"ti');
    const entries = await newLog().list(SB, { limit: 10 });
    expect(entries.map((e) => e.seq)).toEqual([1]);
  });

  it("watches: backlog after the cursor, then live entries and completions, until the sandbox ends", async () => {
    const log = newLog();
    await log.append(SB, tcp("192.88.99.1"));
    const second = await log.append(SB, tcp("192.88.99.2"));
    const seen: ConnectionEntry[] = [];
    const done = (async () => {
      for await (const e of log.watch(SB, 1, new AbortController().signal)) seen.push(e);
    })();
    await new Promise((r) => setImmediate(r));
    await log.append(SB, tcp("192.88.99.3", "denied"));
    await log.complete(SB, second.seq, { bytesOut: 1, bytesIn: 2 });
    await log.sandboxEnded(SB);
    await done;
    expect(seen.map((e) => [e.seq, e.endedAt !== undefined])).toEqual([
      [2, false],
      [3, false],
      [2, true],
    ]);
    // An ended sandbox's watch yields its entries and returns.
    const again: number[] = [];
    for await (const e of log.watch(SB, 0, new AbortController().signal)) again.push(e.seq);
    expect(again).toEqual([1, 2, 3]);
  });

  it("stops watching when the signal aborts", async () => {
    const log = newLog();
    const abort = new AbortController();
    const seen: number[] = [];
    const done = (async () => {
      for await (const e of log.watch(SB, 0, abort.signal)) seen.push(e.seq);
    })();
    await log.append(SB, tcp("192.88.99.1"));
    await new Promise((r) => setImmediate(r));
    abort.abort();
    await done;
    expect(seen).toEqual([1]);
  });

  it("lets an idle live sandbox's ring leave memory, keeping it while a connection is open", async () => {
    const log = newLog();
    const open = await log.append(SB, tcp("192.88.99.1"));
    await log.append(OTHER, tcp("192.88.99.1"));
    now += 11 * 60_000;
    await log.sweep();
    // OTHER's ring was dropped and is read back from its file; SB's stays (its connection is open).
    expect(await log.list(OTHER, { limit: 10 })).toHaveLength(1);
    await log.complete(SB, open.seq, { bytesOut: 5, bytesIn: 6 });
    now += 11 * 60_000;
    await log.sweep();
    const reloaded = await log.list(SB, { limit: 10 });
    expect(reloaded).toMatchObject([{ seq: 1, bytesOut: 5, bytesIn: 6 }]);
    expect((await log.append(SB, tcp("192.88.99.2"))).seq).toBe(2);
  });

  it("removes a file 24 h after its sandbox ended, and marks orphans ended", async () => {
    const log = newLog();
    await log.append(SB, tcp("192.88.99.1"));
    await log.append(OTHER, tcp("192.88.99.1"));
    await log.flush();
    await log.sandboxEnded(SB);
    await log.sandboxEnded("c".repeat(20)); // never logged: no file made
    now += 23 * 3600 * 1000;
    await log.sweep((id) => id === OTHER);
    expect((await readdir(dir)).sort()).toEqual([`${SB}.ended`, `${SB}.jsonl`, `${OTHER}.jsonl`]);
    // Still readable after the end (reloaded from the file once the ring left memory).
    expect(await log.list(SB, { limit: 10 })).toHaveLength(1);
    now += 2 * 3600 * 1000;
    await log.sweep((id) => id === OTHER); // drops the ring from memory
    await log.sweep((id) => id === OTHER); // then removes the file
    expect(await readdir(dir)).toEqual([`${OTHER}.jsonl`]);
    // OTHER's agent went away without an end mark: marked now, removed a day later.
    await log.sweep(() => false);
    expect((await readdir(dir)).sort()).toEqual([`${OTHER}.ended`, `${OTHER}.jsonl`]);
    now += 25 * 3600 * 1000;
    await log.sweep(() => false);
    await log.sweep(() => false);
    expect(await readdir(dir)).toEqual([]);
  });
});

import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { parseProcStat, processAlive, readProcStat, waitForExit } from "../../process-identity.js";
import { processArgv, signalProcess } from "./process.js";

describe("parseProcStat", () => {
  it("counts fields after the last parenthesis, so odd command names do not shift them", () => {
    const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
    fields[0] = "S";
    const text = `1234 (qemu (x) y) ${fields.join(" ")}`;
    expect(parseProcStat(text)).toEqual({ state: "S", startTime: "22" });
  });

  it("rejects text that is not a stat line", () => {
    expect(parseProcStat("garbage")).toBeUndefined();
    expect(parseProcStat("1 (x) S 1 2")).toBeUndefined();
  });
});

describe("process identity", () => {
  it("recognises a live process by pid and start time, and notices when it is gone", async () => {
    const child = spawn("sleep", ["30"], { stdio: "ignore" });
    const pid = child.pid;
    if (pid === undefined) throw new Error("sleep did not start");
    try {
      const stat = await readProcStat(pid);
      expect(stat?.startTime).toMatch(/^[0-9]+$/);
      expect(await processAlive(pid, stat?.startTime)).toBe(true);
      // A different start time means the PID now belongs to another process.
      expect(await processAlive(pid, "1")).toBe(false);
      expect(await processArgv(pid)).toEqual(["sleep", "30"]);
      await signalProcess(pid, stat?.startTime, "SIGKILL");
      expect(await waitForExit(pid, stat?.startTime, 5000)).toBe(true);
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("does not signal a process whose start time does not match", async () => {
    const child = spawn("sleep", ["30"], { stdio: "ignore" });
    const pid = child.pid;
    if (pid === undefined) throw new Error("sleep did not start");
    try {
      await signalProcess(pid, "1", "SIGKILL");
      expect(await processAlive(pid)).toBe(true);
      expect(await waitForExit(pid, undefined, 50)).toBe(false);
    } finally {
      child.kill("SIGKILL");
    }
  });
});

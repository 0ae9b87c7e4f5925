import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { isSameProcessAlive, readPidStartTime } from "./process-identity.js";

describe("process identity", () => {
  it("names a live process by pid and start time, and forgets it once it exits", async () => {
    const child = spawn("sleep", ["10"]);
    const pid = child.pid ?? 0;
    const start = await readPidStartTime(pid);
    expect(start).toMatch(/^[0-9]+$/);
    expect(await isSameProcessAlive(pid, start ?? "")).toBe(true);
    expect(await isSameProcessAlive(pid, "1")).toBe(false);
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
    expect(await isSameProcessAlive(pid, start ?? "")).toBe(false);
  });

  it("reads its own start time even though its name has spaces or parentheses", async () => {
    expect(await readPidStartTime(process.pid)).toMatch(/^[0-9]+$/);
    expect(await readPidStartTime(2 ** 22 + 7)).toBeUndefined();
  });
});

import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * Host-process facts the QEMU runtime relies on to recognise its own VMs: a PID plus the process
 * start time (field 22 of /proc/<pid>/stat) identifies a process even after PIDs wrap around.
 */

export interface ProcStat {
  /** One-letter state (R, S, D, Z, …). */
  state: string;
  /** Start time in clock ticks since boot, as a decimal string. */
  startTime: string;
}

/** Parses /proc/<pid>/stat text; the command name may contain spaces and parentheses, so fields are counted after the last ')'. */
export function parseProcStat(text: string): ProcStat | undefined {
  const close = text.lastIndexOf(")");
  if (close < 0) return undefined;
  // After ") " come field 3 (state) onwards; start time is field 22, i.e. index 19 here.
  const fields = text
    .slice(close + 2)
    .trim()
    .split(/\s+/);
  const state = fields[0];
  const startTime = fields[19];
  if (!state || !startTime || !/^[0-9]+$/.test(startTime)) return undefined;
  return { state, startTime };
}

export async function readProcStat(pid: number): Promise<ProcStat | undefined> {
  try {
    return parseProcStat(await readFile(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return undefined;
  }
}

/** Whether `pid` is alive (not a zombie) and, when given, started at `startTime`. */
export async function processAlive(pid: number, startTime?: string): Promise<boolean> {
  const stat = await readProcStat(pid);
  if (!stat || stat.state === "Z" || stat.state === "X") return false;
  return startTime === undefined || stat.startTime === startTime;
}

/** The process's argv, or undefined when it is gone. */
export async function processArgv(pid: number): Promise<string[] | undefined> {
  try {
    const raw = await readFile(`/proc/${pid}/cmdline`, "utf8");
    return raw.split("\0").filter((a) => a.length > 0);
  } catch {
    return undefined;
  }
}

/** Polls until the process is gone; resolves true if it exited within `timeoutMs`. */
export async function waitForExit(pid: number, startTime: string | undefined, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!(await processAlive(pid, startTime))) return true;
    if (Date.now() >= deadline) return false;
    await sleep(10);
  }
}

/** Sends a signal to a process if it is still the one identified by pid and start time. */
export async function signalProcess(pid: number, startTime: string | undefined, signal: NodeJS.Signals): Promise<void> {
  if (!(await processAlive(pid, startTime))) return;
  try {
    process.kill(pid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
  }
}

import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * A PID alone can be recycled; a PID plus its start time (field 22 of /proc/<pid>/stat, in clock
 * ticks since boot) names one process for the life of the host. Restart recovery and every runtime
 * rely on this to recognise their own guests.
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

/** The process's state and start time, or undefined when it does not exist. */
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

/** The start time of a live process, or undefined when it does not exist (or is a zombie). */
export async function readPidStartTime(pid: number): Promise<string | undefined> {
  const stat = await readProcStat(pid);
  if (!stat || stat.state === "Z" || stat.state === "X") return undefined;
  return stat.startTime;
}

/** Whether the process `pid` that started at `startTime` still runs. */
export function isSameProcessAlive(pid: number, startTime: string): Promise<boolean> {
  return processAlive(pid, startTime);
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

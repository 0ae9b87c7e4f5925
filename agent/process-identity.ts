import { readFile } from "node:fs/promises";

/**
 * A PID alone can be recycled; a PID plus its start time (field 22 of /proc/<pid>/stat, in clock
 * ticks since boot) names one process for the life of the host. Restart recovery relies on this.
 */

/** The start time of a process, or undefined when it does not exist. */
export async function readPidStartTime(pid: number): Promise<string | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => undefined);
  if (stat === undefined) return undefined;
  // The command name (field 2) may contain spaces and parentheses: count fields after its last ')'.
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const state = rest[0];
  if (state === "Z" || state === "X") return undefined;
  return rest[19];
}

/** Whether the process `pid` that started at `startTime` still runs. */
export async function isSameProcessAlive(pid: number, startTime: string): Promise<boolean> {
  return (await readPidStartTime(pid)) === startTime;
}

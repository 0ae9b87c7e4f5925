import { readFile } from "node:fs/promises";
import { processAlive } from "../../process-identity.js";

/**
 * Host-process helpers of the QEMU runtime beyond process identity (agent/process-identity.ts): a
 * leftover QEMU is recognised by its argv, and signals go only to the process that is still ours.
 */

/** The process's argv, or undefined when it is gone. */
export async function processArgv(pid: number): Promise<string[] | undefined> {
  try {
    const raw = await readFile(`/proc/${pid}/cmdline`, "utf8");
    return raw.split("\0").filter((a) => a.length > 0);
  } catch {
    return undefined;
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

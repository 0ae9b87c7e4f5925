import { spawn } from "node:child_process";
import { close, openSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { processAlive, readProcStat, waitForExit as waitForPidExit } from "../../process-identity.js";

/**
 * The Firecracker process as a host process: started detached in its own session so that it
 * outlives the request and the agent, identified by PID plus start time so that a recycled PID is
 * never mistaken for it, and stopped by signalling its whole process group.
 */

export interface ProcessIdentity {
  pid: number;
  /** Field 22 of /proc/<pid>/stat: clock ticks after boot at which the process started. */
  startTime: string;
}

/** Whether the process is running (not a zombie) and is the one that started at `startTime`. */
export async function isProcessAlive(identity: ProcessIdentity): Promise<boolean> {
  return processAlive(identity.pid, identity.startTime);
}

/**
 * Starts `argv` detached: a new session (so its process group is its own and a signal to the agent's
 * group does not reach it), stdin from /dev/null, stdout and stderr appended to `logPath`. The agent
 * keeps no pipe to it, so the process lives on when the agent exits.
 *
 * This is the one place the runtime spawns without the agent's exec wrapper: that wrapper runs
 * commands to completion, while this starts a daemon whose end is never awaited.
 */
export async function spawnDetached(argv: readonly string[], logPath: string): Promise<ProcessIdentity> {
  const [file, ...args] = argv;
  if (file === undefined) throw new Error("spawnDetached: empty argv");
  const logFd = openSync(logPath, "a", 0o640);
  try {
    const child = spawn(file, args, { detached: true, stdio: ["ignore", logFd, logFd] });
    const pid = await new Promise<number>((resolve, reject) => {
      child.once("error", (err) => reject(new Error(`cannot start ${file}: ${err.message}`, { cause: err })));
      child.once("spawn", () => {
        if (child.pid === undefined) reject(new Error(`cannot start ${file}: no pid`));
        else resolve(child.pid);
      });
    });
    // Keep the child object (so Node reaps it if it exits while the agent runs) but let the agent exit without it.
    child.unref();
    const stat = await readProcStat(pid);
    if (stat === undefined) throw new Error(`${file} (pid ${pid}) exited immediately; see ${logPath}`);
    return { pid, startTime: stat.startTime };
  } finally {
    close(logFd, () => {});
  }
}

/** Polls until the process is gone; true if it went within `timeoutMs`. */
export function waitForExit(identity: ProcessIdentity, timeoutMs: number): Promise<boolean> {
  return waitForPidExit(identity.pid, identity.startTime, timeoutMs);
}

/**
 * Stops the process and everything in its process group: SIGTERM, then SIGKILL when it is still
 * there after `graceMs`. Does nothing when the process is already gone or the PID now belongs to
 * another process. Resolves once the process has gone.
 */
export async function killProcessGroup(identity: ProcessIdentity, graceMs: number): Promise<void> {
  if (!(await isProcessAlive(identity))) return;
  signalGroup(identity.pid, "SIGTERM");
  if (await waitForExit(identity, graceMs)) return;
  signalGroup(identity.pid, "SIGKILL");
  if (!(await waitForExit(identity, 5_000))) {
    throw new Error(`process ${identity.pid} survived SIGKILL (uninterruptible sleep?)`);
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    // The process leads its own group (spawned detached), so -pid reaches it and anything it forked.
    process.kill(-pid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
    try {
      process.kill(pid, signal);
    } catch (inner) {
      if ((inner as NodeJS.ErrnoException).code !== "ESRCH") throw inner;
    }
  }
}

/** The last `maxBytes` of a log file, for error messages; empty when it cannot be read. */
export async function logTail(path: string, maxBytes = 2_000): Promise<string> {
  try {
    const text = await readFile(path, "utf8");
    return text.length > maxBytes ? `…${text.slice(-maxBytes)}` : text;
  } catch {
    return "";
  }
}

import { spawn } from "node:child_process";
import { open } from "node:fs/promises";
import { ExecaError, execa } from "execa";
import type { Logger } from "./logger.js";

/**
 * The agent's one way to run an external program. Every call honours an abort signal (the RPC's or
 * the agent's shutdown signal), is killed hard if it ignores SIGTERM, and fails with a structured
 * error that carries the command and the tail of its stderr.
 */

export interface ExecOptions {
  /** Aborting kills the process (SIGTERM, then SIGKILL after forceKillAfterMs). */
  signal?: AbortSignal;
  /** Text or bytes written to stdin, which is then closed. */
  input?: string | Uint8Array;
  /** Kill the process after this many milliseconds; default 30 s. */
  timeoutMs?: number;
  forceKillAfterMs?: number;
  /** Resolve (instead of throwing) when the exit code is non-zero. */
  allowFailure?: boolean;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** A failed external command. */
export class ExecError extends Error {
  readonly command: string;
  readonly exitCode: number | undefined;
  readonly stderrTail: string;
  constructor(command: string, exitCode: number | undefined, stderrTail: string, reason: string, cause?: unknown) {
    super(`${command}: ${reason}${stderrTail ? `: ${stderrTail}` : ""}`, { cause });
    this.name = "ExecError";
    this.command = command;
    this.exitCode = exitCode;
    this.stderrTail = stderrTail;
  }
}

export type Exec = (file: string, args: readonly string[], options?: ExecOptions) => Promise<ExecResult>;

const tail = (text: string, max = 600) => (text.length > max ? `…${text.slice(-max)}` : text).trim();

export function createExec(logger: Logger): Exec {
  return async (file, args, options = {}) => {
    const command = [file, ...args].join(" ");
    const started = performance.now();
    try {
      const result = await execa(file, args, {
        cancelSignal: options.signal,
        forceKillAfterDelay: options.forceKillAfterMs ?? 5_000,
        timeout: options.timeoutMs ?? 30_000,
        input: options.input,
        stdin: options.input === undefined ? "ignore" : "pipe",
        reject: false,
        stripFinalNewline: true,
      });
      const ms = Math.round(performance.now() - started);
      const stdout = typeof result.stdout === "string" ? result.stdout : "";
      const stderr = typeof result.stderr === "string" ? result.stderr : "";
      if (result.isCanceled) throw new ExecError(command, undefined, tail(stderr), "cancelled");
      if (result.timedOut) throw new ExecError(command, undefined, tail(stderr), "timed out");
      if (result.failed && result.exitCode === undefined) {
        throw new ExecError(command, undefined, tail(stderr), result.shortMessage ?? "failed to run");
      }
      const exitCode = result.exitCode ?? -1;
      logger.debug("exec", { command: tail(command, 200), exitCode, ms });
      if (exitCode !== 0 && !options.allowFailure) {
        throw new ExecError(command, exitCode, tail(stderr), `exit code ${exitCode}`);
      }
      return { exitCode, stdout, stderr };
    } catch (err) {
      if (err instanceof ExecError) throw err;
      if (err instanceof ExecaError)
        throw new ExecError(command, err.exitCode, tail(String(err.stderr ?? "")), err.shortMessage, err);
      throw new ExecError(command, undefined, "", (err as Error).message, err);
    }
  };
}

export interface DetachedOptions {
  /** File that receives the process's stdout and stderr (appended). */
  logFile: string;
  env?: Record<string, string>;
}

/**
 * Starts a long-lived process that outlives the agent: its own session and process group, stdio to a
 * log file, not waited on. Resolves with its PID once the kernel has started it. The guest processes
 * of every runtime start this way, so that an agent restart (or crash) does not take them down.
 */
export async function spawnDetached(file: string, args: readonly string[], options: DetachedOptions): Promise<number> {
  const fd = await open(options.logFile, "a");
  try {
    const child = spawn(file, args, {
      detached: true,
      stdio: ["ignore", fd.fd, fd.fd],
      env: options.env ?? {},
    });
    const pid = await new Promise<number>((resolve, reject) => {
      child.once("error", (err) => reject(new ExecError([file, ...args].join(" "), undefined, "", err.message, err)));
      child.once("spawn", () => (child.pid === undefined ? reject(new Error("no pid")) : resolve(child.pid)));
    });
    // The agent still reaps it if it exits while the agent lives, but does not wait for it.
    child.unref();
    return pid;
  } finally {
    await fd.close();
  }
}

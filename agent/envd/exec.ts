import { execa } from "execa";
import { STANDARD_PATH } from "./users.js";

/** Result of one external command. */
export interface ExecResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** Runs an external command; the one place envd spawns helper programs (getfattr, date, socat probes). */
export type Exec = (
  file: string,
  args: readonly string[],
  opts?: { signal?: AbortSignal; input?: string; timeoutMs?: number },
) => Promise<ExecResult>;

/**
 * Creates the execa-backed {@link Exec}. It never throws on a non-zero exit (callers decide what a
 * failure means) but does reject when the program cannot be started or is cancelled.
 */
export function createExec(): Exec {
  return async (file, args, opts = {}) => {
    const result = await execa(file, args, {
      reject: false,
      cancelSignal: opts.signal,
      forceKillAfterDelay: 2_000,
      timeout: opts.timeoutMs ?? 30_000,
      input: opts.input,
      stripFinalNewline: false,
      env: { LC_ALL: "C", PATH: STANDARD_PATH },
      extendEnv: false,
    });
    if (result.failed && result.exitCode === undefined) {
      throw result.cause instanceof Error ? result.cause : new Error(result.message);
    }
    return { stdout: result.stdout, stderr: result.stderr, exitCode: result.exitCode ?? -1 };
  };
}

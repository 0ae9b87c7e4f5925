import type { Readable } from "node:stream";
import { ExecaError, execa, type ResultPromise } from "execa";
import { BuildError } from "./errors.js";

/** Options for {@link run}. */
export interface RunOptions {
  signal?: AbortSignal | undefined;
  cwd?: string;
  /** Extra environment variables (merged over a minimal, predictable environment). */
  env?: Record<string, string>;
  /** Data written to the command's stdin. */
  input?: string | Uint8Array;
  /** Hint shown with the error when the command fails. */
  hint?: string;
  /** Return stdout as a Buffer instead of a string. */
  binary?: boolean;
}

/** Output of a finished command. */
export interface RunResult {
  stdout: string;
  stderr: string;
}

const tail = (text: string, lines = 15) => text.trim().split("\n").slice(-lines).join("\n");

/**
 * Runs an external command for the image builder: the one execa wrapper of the `image` program.
 * Honours abort signals (SIGTERM, then SIGKILL after 5 s), and turns a failure into a BuildError that
 * names the command and quotes the end of its stderr.
 */
export async function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  try {
    const result = await execa(file, args, {
      cancelSignal: opts.signal,
      forceKillAfterDelay: 5_000,
      cwd: opts.cwd,
      env: { LC_ALL: "C.UTF-8", DEBIAN_FRONTEND: "noninteractive", ...opts.env },
      input: opts.input,
      stripFinalNewline: false,
      maxBuffer: 256 * 1024 * 1024,
    });
    return { stdout: String(result.stdout), stderr: String(result.stderr) };
  } catch (err) {
    if (err instanceof ExecaError) {
      if (err.isCanceled) throw new BuildError(`interrupted while running ${file}`, undefined, { cause: err });
      const detail = tail(String(err.stderr ?? "")) || tail(String(err.stdout ?? "")) || err.shortMessage;
      const what = err.code === "ENOENT" ? `${file}: command not found` : `${file} ${args.join(" ")} failed`;
      throw new BuildError(`${what}\n${detail}`, opts.hint, { cause: err });
    }
    throw err;
  }
}

/** Runs a command and returns its stdout as bytes (for pipelines whose output is binary). */
export async function runBinary(file: string, args: readonly string[], opts: RunOptions = {}): Promise<Buffer> {
  try {
    const result = await execa(file, args, {
      cancelSignal: opts.signal,
      forceKillAfterDelay: 5_000,
      cwd: opts.cwd,
      env: { LC_ALL: "C.UTF-8", ...opts.env },
      input: opts.input,
      encoding: "buffer",
      maxBuffer: 1024 * 1024 * 1024,
    });
    return Buffer.from(result.stdout);
  } catch (err) {
    if (err instanceof ExecaError) {
      if (err.isCanceled) throw new BuildError(`interrupted while running ${file}`, undefined, { cause: err });
      throw new BuildError(
        `${file} ${args.join(" ")} failed\n${tail(Buffer.from(err.stderr ?? "").toString())}`,
        opts.hint,
        {
          cause: err,
        },
      );
    }
    throw err;
  }
}

/**
 * Starts a long-running command (a VM, a bridge, a sandbox) without waiting for it; the caller kills it
 * by pid. Output goes to `onOutput` when given (stdout and stderr interleaved), else stdout is discarded
 * and stderr kept for the error message when it exits early.
 */
export function start(
  file: string,
  args: readonly string[],
  opts: {
    signal?: AbortSignal | undefined;
    onOutput?: (chunk: string) => void;
    /** Extra environment variables (merged over this process's). */
    env?: Record<string, string>;
    /** A pipe on the child's fd 3 (e.g. apt's APT::Status-Fd=3), its chunks given here. */
    onFd3?: (chunk: string) => void;
  } = {},
): ResultPromise {
  const child = execa(file, args, {
    cancelSignal: opts.signal,
    ...(opts.env ? { env: opts.env } : {}),
    forceKillAfterDelay: 5_000,
    reject: false,
    stdio: ["ignore", opts.onOutput ? "pipe" : "ignore", "pipe", ...(opts.onFd3 ? (["pipe"] as const) : [])] as [
      "ignore",
      "ignore" | "pipe",
      "pipe",
      ...("pipe" | "ignore")[],
    ],
    buffer: !opts.onOutput,
  }) as ResultPromise;
  const onOutput = opts.onOutput;
  if (onOutput) {
    child.stdout?.on("data", (chunk: Buffer) => onOutput(chunk.toString()));
    child.stderr?.on("data", (chunk: Buffer) => onOutput(chunk.toString()));
  }
  const onFd3 = opts.onFd3;
  if (onFd3) (child.stdio[3] as Readable | undefined)?.on("data", (chunk: Buffer) => onFd3(chunk.toString()));
  return child;
}

import type { EntryInfo } from "../../proto/gen/envd/filesystem/filesystem_pb.js";
import { type ProcessEvent, Signal } from "../../proto/gen/envd/process/process_pb.js";
import { EnvdClient } from "../envd-client.js";
import { AgentError } from "../errors.js";
import type { GuestEnvd } from "./guest-envd.js";

/** Largest file WriteFile/ReadFile move in one message. */
export const MAX_FILE_BYTES = 16 * 2 ** 20;
/** Output kept per stream by Exec before it is cut. */
export const MAX_EXEC_OUTPUT_BYTES = 16 * 2 ** 20;
const DEFAULT_EXEC_TIMEOUT_SEC = 60;
/** Size of the chunks ReadFileStream sends. */
export const STREAM_CHUNK_BYTES = 256 * 1024;

/** A command to run in a guest, as Exec and ExecStream ask for it. */
export interface ProcessRequest {
  sandboxId: string;
  cmd: string;
  args: string[];
  envs: { [key: string]: string };
  cwd: string;
  /** Linux user in the guest ("": the sandbox's default user). */
  user: string;
  /** 0: no limit (ExecStream) or the default (Exec). */
  timeoutSec: number;
  /** The command history's id for it, passed to envd as the process's tag (issue 22). */
  commandId?: string;
}

/** A path in a guest, read or changed as `user`. */
export interface PathRequest {
  sandboxId: string;
  path: string;
  user: string;
}

export interface ExecResult {
  stdout: Buffer;
  stderr: Buffer;
  /** -1 when the process did not exit by itself (killed by a signal). */
  exitCode: number;
  error: string;
  /** Output past MAX_EXEC_OUTPUT_BYTES per stream was dropped. */
  truncated: boolean;
  durationMs: number;
}

/** What ExecStream reports, in order: started, output, exited. A PTY's output counts as stdout. */
export type ExecEvent =
  | { kind: "started"; pid: number }
  | { kind: "stdout" | "stderr"; data: Uint8Array }
  | { kind: "exited"; exitCode: number; error: string };

export interface GuestIoDeps {
  /** The envd client of a running sandbox; throws when the sandbox is not running. */
  envdOf(sandboxId: string): GuestEnvd;
}

function requireField(value: string, name: string): void {
  if (value === "") throw new AgentError("INVALID_ARGUMENT", "MISSING_FIELD", `${name} is required`);
}

function withTimeout(signal: AbortSignal, timeoutSec: number): AbortSignal {
  return timeoutSec > 0 ? AbortSignal.any([signal, AbortSignal.timeout(timeoutSec * 1000)]) : signal;
}

function fileTooLarge(message: string): AgentError {
  return new AgentError("RESOURCE_EXHAUSTED", "FILE_TOO_LARGE", message);
}

/**
 * Processes and files in a running guest, through its envd: the limits on what passes through the
 * agent in one message, timeouts, and killing a command whose caller went away.
 */
export class GuestIo {
  readonly #deps: GuestIoDeps;

  constructor(deps: GuestIoDeps) {
    this.#deps = deps;
  }

  /** Runs a command to its end, collecting its output (each stream cut at MAX_EXEC_OUTPUT_BYTES). */
  async exec(req: ProcessRequest, stdin: Uint8Array | undefined, callerSignal: AbortSignal): Promise<ExecResult> {
    const envd = this.#deps.envdOf(req.sandboxId);
    const started = performance.now();
    const timeoutSec = req.timeoutSec || DEFAULT_EXEC_TIMEOUT_SEC;
    const signal = withTimeout(callerSignal, timeoutSec);
    const out: Uint8Array[] = [];
    const err: Uint8Array[] = [];
    let outBytes = 0;
    let errBytes = 0;
    let truncated = false;
    let exitCode = -1;
    let error = "";
    try {
      for await (const event of runProcess(envd, req, signal, stdin)) {
        if (event.event.case === "data") {
          const output = event.event.value.output;
          if (output.case === "stdout" || output.case === "stderr") {
            const chunk = output.value;
            const isOut = output.case === "stdout";
            const used = isOut ? outBytes : errBytes;
            const room = MAX_EXEC_OUTPUT_BYTES - used;
            if (chunk.length > room) truncated = true;
            const kept = chunk.subarray(0, Math.max(0, room));
            (isOut ? out : err).push(kept);
            if (isOut) outBytes += kept.length;
            else errBytes += kept.length;
          }
        } else if (event.event.case === "end") {
          const end = event.event.value;
          exitCode = end.exited ? end.exitCode : -1;
          error = end.error ?? (end.exited ? "" : end.status);
        }
      }
    } catch (e) {
      if (signal.aborted && !callerSignal.aborted) {
        throw new AgentError("DEADLINE_EXCEEDED", "EXEC_TIMEOUT", `command did not finish within ${timeoutSec} s`);
      }
      throw e;
    }
    return {
      stdout: Buffer.concat(out),
      stderr: Buffer.concat(err),
      exitCode,
      error,
      truncated,
      durationMs: Math.round(performance.now() - started),
    };
  }

  /**
   * Starts a command and returns its pid as soon as it runs; the command runs on after this call and
   * after the stream to envd is closed (envd never ends a process for a closed stream). Its end and
   * output reach the edge through the command history (envd's journal, the telemetry sampler).
   */
  async startBackground(
    req: ProcessRequest,
    stdin: Uint8Array | undefined,
    callerSignal: AbortSignal,
  ): Promise<{ pid: number }> {
    const envd = this.#deps.envdOf(req.sandboxId);
    const controller = new AbortController();
    const onAbort = () => controller.abort(callerSignal.reason);
    callerSignal.addEventListener("abort", onAbort, { once: true });
    try {
      for await (const event of runProcess(envd, req, controller.signal, stdin, { killOnAbort: false })) {
        if (event.event.case === "start") return { pid: event.event.value.pid };
      }
      throw new AgentError("UNAVAILABLE", "ENVD_STREAM_ENDED", "envd ended the process stream before it started");
    } finally {
      callerSignal.removeEventListener("abort", onAbort);
      // Closing the stream leaves the process running.
      controller.abort();
    }
  }

  /** Runs a command, reporting its output as it comes. */
  async *execStream(req: ProcessRequest, callerSignal: AbortSignal): AsyncGenerator<ExecEvent> {
    const envd = this.#deps.envdOf(req.sandboxId);
    const signal = withTimeout(callerSignal, req.timeoutSec);
    for await (const event of runProcess(envd, req, signal, undefined)) {
      const e = event.event;
      if (e.case === "start") yield { kind: "started", pid: e.value.pid };
      else if (e.case === "data") {
        const o = e.value.output;
        if (o.case === "stdout" || o.case === "pty") yield { kind: "stdout", data: o.value };
        else if (o.case === "stderr") yield { kind: "stderr", data: o.value };
      } else if (e.case === "end") {
        yield {
          kind: "exited",
          exitCode: e.value.exited ? e.value.exitCode : -1,
          error: e.value.error ?? (e.value.exited ? "" : e.value.status),
        };
      }
    }
  }

  /** Writes a whole file (at most MAX_FILE_BYTES) and returns what envd then reports about it. */
  async writeFile(req: PathRequest, content: Uint8Array, signal: AbortSignal): Promise<EntryInfo | undefined> {
    requireField(req.path, "path");
    if (content.length > MAX_FILE_BYTES) {
      throw fileTooLarge(`WriteFile takes at most ${MAX_FILE_BYTES} bytes; use the /files proxy`);
    }
    const envd = this.#deps.envdOf(req.sandboxId);
    await envd.writeFile(req.path, content, req.user, signal);
    const stat = await envd.filesystem.stat({ path: req.path }, { ...EnvdClient.asUser(req.user), signal });
    return stat.entry;
  }

  /** Reads a whole file of at most MAX_FILE_BYTES; a larger one is refused without reading the rest. */
  async readFile(req: PathRequest, signal: AbortSignal): Promise<Buffer> {
    requireField(req.path, "path");
    const envd = this.#deps.envdOf(req.sandboxId);
    const res = await envd.readFile(req.path, req.user, signal);
    const tooLarge = () => fileTooLarge(`${req.path} is over ${MAX_FILE_BYTES} bytes; use ReadFileStream`);
    const length = Number(res.headers.get("content-length") ?? "0");
    if (length > MAX_FILE_BYTES) {
      await res.body?.cancel();
      throw tooLarge();
    }
    const chunks: Uint8Array[] = [];
    let total = 0;
    for await (const chunk of res.body ?? []) {
      total += chunk.length;
      if (total > MAX_FILE_BYTES) {
        await res.body?.cancel().catch(() => {});
        throw tooLarge();
      }
      chunks.push(chunk);
    }
    return Buffer.concat(chunks);
  }

  /** Reads a file of any size in chunks of STREAM_CHUNK_BYTES (the last one shorter). */
  async *readFileStream(req: PathRequest, signal: AbortSignal): AsyncGenerator<Buffer> {
    requireField(req.path, "path");
    const envd = this.#deps.envdOf(req.sandboxId);
    const res = await envd.readFile(req.path, req.user, signal);
    let pending: Uint8Array[] = [];
    let pendingBytes = 0;
    for await (const chunk of res.body ?? []) {
      let rest: Uint8Array = chunk;
      while (pendingBytes + rest.length >= STREAM_CHUNK_BYTES) {
        const take = STREAM_CHUNK_BYTES - pendingBytes;
        pending.push(rest.subarray(0, take));
        yield Buffer.concat(pending);
        rest = rest.subarray(take);
        pending = [];
        pendingBytes = 0;
      }
      if (rest.length > 0) {
        pending.push(rest);
        pendingBytes += rest.length;
      }
    }
    if (pendingBytes > 0) yield Buffer.concat(pending);
  }

  async listDir(req: PathRequest, depth: number, signal: AbortSignal): Promise<EntryInfo[]> {
    requireField(req.path, "path");
    const envd = this.#deps.envdOf(req.sandboxId);
    const res = await envd.filesystem.listDir(
      { path: req.path, depth: Math.max(1, depth) },
      { ...EnvdClient.asUser(req.user), signal },
    );
    return res.entries;
  }

  async makeDir(req: PathRequest, signal: AbortSignal): Promise<EntryInfo | undefined> {
    requireField(req.path, "path");
    const envd = this.#deps.envdOf(req.sandboxId);
    const res = await envd.filesystem.makeDir({ path: req.path }, { ...EnvdClient.asUser(req.user), signal });
    return res.entry;
  }

  async removePath(req: PathRequest, signal: AbortSignal): Promise<void> {
    requireField(req.path, "path");
    const envd = this.#deps.envdOf(req.sandboxId);
    await envd.filesystem.remove({ path: req.path }, { ...EnvdClient.asUser(req.user), signal });
  }
}

/** Runs a process in the guest, yielding envd's events; kills it when the signal aborts. */
async function* runProcess(
  envd: GuestEnvd,
  req: ProcessRequest,
  signal: AbortSignal,
  stdin: Uint8Array | undefined,
  options: { killOnAbort: boolean } = { killOnAbort: true },
): AsyncGenerator<ProcessEvent> {
  requireField(req.cmd, "cmd");
  const controller = new AbortController();
  const onAbort = () => controller.abort(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  let pid: number | undefined;
  try {
    const stream = envd.process.start(
      {
        process: { cmd: req.cmd, args: req.args, envs: req.envs, cwd: req.cwd === "" ? undefined : req.cwd },
        stdin: stdin !== undefined,
        ...(req.commandId ? { tag: req.commandId } : {}),
      },
      { ...EnvdClient.asUser(req.user), signal: controller.signal },
    );
    for await (const res of stream) {
      const event = res.event;
      if (event === undefined) continue;
      if (event.event.case === "start") {
        pid = event.event.value.pid;
        if (stdin !== undefined) {
          const selector = { selector: { case: "pid" as const, value: pid } };
          if (stdin.length > 0) {
            await envd.process.sendInput(
              { process: selector, input: { input: { case: "stdin", value: stdin } } },
              EnvdClient.asUser(req.user),
            );
          }
          await envd.process.closeStdin({ process: selector }, EnvdClient.asUser(req.user));
        }
      }
      yield event;
      if (event.event.case === "end") return;
    }
    throw new AgentError("UNAVAILABLE", "ENVD_STREAM_ENDED", "envd ended the process stream without an end event");
  } finally {
    signal.removeEventListener("abort", onAbort);
    if (pid !== undefined && signal.aborted && options.killOnAbort) {
      // The caller gave up or the timeout ran out: do not leave the command running in the guest.
      await envd.process
        .sendSignal(
          { process: { selector: { case: "pid", value: pid } }, signal: Signal.SIGKILL },
          EnvdClient.asUser(req.user),
        )
        .catch(() => {});
    }
  }
}

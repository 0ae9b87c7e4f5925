import {
  type BackgroundCommandInfo,
  type CommandPageInfo,
  type CommandPageOptions,
  listCommandHistory,
} from "./command-history.js";
import { WrennError } from "./errors.js";
import { type ApiClient, segment } from "./http.js";
import { readServerSentEvents } from "./sse.js";
import type { ExecRequest } from "./types.js";

/** Options of a command. */
export interface CommandOptions {
  /** Arguments: when given, `cmd` is the program; without them `cmd` is a script for `bash -l -c`. */
  args?: string[];
  envs?: Record<string, string>;
  cwd?: string;
  /** Linux user to run as; default the sandbox's user (`user`). */
  user?: string;
  /** Seconds before the command is killed; default the API's (60). */
  timeoutSec?: number;
  /** Cancels the command: closing the stream kills it in the sandbox. */
  signal?: AbortSignal;
}

/** Options of `run`: streaming callbacks on top of `CommandOptions`. */
export interface RunOptions extends CommandOptions {
  /** Called with each piece of stdout as it arrives (decoded as UTF-8). */
  onStdout?: (data: string) => void;
  /** Called with each piece of stderr as it arrives (decoded as UTF-8). */
  onStderr?: (data: string) => void;
}

/** An event of a running command, with output as bytes. */
export type CommandEvent =
  | { type: "start"; pid: number }
  | { type: "stdout" | "stderr"; data: Uint8Array }
  | { type: "exit"; exitCode: number; error?: string };

/** A finished command. */
export interface CommandResult {
  stdout: string;
  stderr: string;
  exitCode: number;
  /** Why the command ended abnormally (killed by a signal, timed out), when it did. */
  error?: string;
}

const encoder = new TextEncoder();

function fromBase64(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function parseEventData(data: string): Record<string, unknown> {
  try {
    const parsed: unknown = JSON.parse(data);
    if (typeof parsed === "object" && parsed !== null) return parsed as Record<string, unknown>;
  } catch {
    // reported below
  }
  throw new WrennError("BAD_RESPONSE", `exec stream: an event's data is not a JSON object: ${data.slice(0, 200)}`);
}

/** Runs commands in one sandbox through the API's streaming exec (Server-Sent Events). */
export class Commands {
  constructor(
    private readonly api: ApiClient,
    private readonly sandboxId: string,
  ) {}

  /**
   * Starts a command and yields its events as they come: `start`, then `stdout`/`stderr` chunks as
   * bytes, then one `exit`. Breaking out of the loop or aborting `signal` kills the command.
   */
  async *stream(cmd: string, options: CommandOptions = {}): AsyncGenerator<CommandEvent> {
    const body: ExecRequest = { cmd };
    if (options.args) body.args = options.args;
    if (options.envs) body.envs = options.envs;
    if (options.cwd) body.cwd = options.cwd;
    if (options.user) body.user = options.user;
    if (options.timeoutSec !== undefined) body.timeoutSec = options.timeoutSec;
    const controller = new AbortController();
    const onAbort = () => controller.abort(options.signal?.reason);
    options.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const res = await this.api.raw("POST", `/v1/sandboxes/${segment(this.sandboxId)}/exec/stream`, {
        json: body,
        headers: { accept: "text/event-stream" },
        signal: controller.signal,
        timeoutMs: 0,
      });
      if (!res.body) throw new WrennError("BAD_RESPONSE", "exec stream: the answer has no body");
      let exited = false;
      for await (const event of readServerSentEvents(res.body)) {
        const data = parseEventData(event.data);
        switch (event.event) {
          case "start":
            yield { type: "start", pid: typeof data.pid === "number" ? data.pid : 0 };
            break;
          case "stdout":
          case "stderr": {
            const text = typeof data.data === "string" ? data.data : "";
            const bytes = data.encoding === "base64" ? fromBase64(text) : encoder.encode(text);
            yield { type: event.event, data: bytes };
            break;
          }
          case "exit": {
            exited = true;
            const exitCode = typeof data.exitCode === "number" ? data.exitCode : -1;
            // envd reports every non-zero exit as "exit status N"; only other texts (signals, failures) are errors.
            const error = typeof data.error === "string" && data.error !== `exit status ${exitCode}` ? data.error : "";
            yield error ? { type: "exit", exitCode, error } : { type: "exit", exitCode };
            break;
          }
          case "error":
            throw new WrennError(
              typeof data.code === "string" ? data.code : "AGENT_ERROR",
              typeof data.message === "string" ? data.message : "the command failed",
            );
          default:
            break;
        }
        if (exited) return;
      }
      throw new WrennError("STREAM_ENDED", "exec stream: the connection closed before the command exited");
    } finally {
      options.signal?.removeEventListener("abort", onAbort);
      controller.abort();
    }
  }

  /**
   * Runs a command to the end and returns its output and exit code. A non-zero exit code is not an
   * error: check `exitCode`. `onStdout`/`onStderr` see output while the command runs.
   */
  async run(cmd: string, options: RunOptions = {}): Promise<CommandResult> {
    const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
    const output = { stdout: "", stderr: "" };
    const callbacks = { stdout: options.onStdout, stderr: options.onStderr };
    for await (const event of this.stream(cmd, options)) {
      if (event.type === "stdout" || event.type === "stderr") {
        const text = decoders[event.type].decode(event.data, { stream: true });
        output[event.type] += text;
        if (text) callbacks[event.type]?.(text);
      } else if (event.type === "exit") {
        for (const name of ["stdout", "stderr"] as const) {
          const tail = decoders[name].decode();
          output[name] += tail;
          if (tail) callbacks[name]?.(tail);
        }
        const result: CommandResult = { ...output, exitCode: event.exitCode };
        if (event.error) result.error = event.error;
        return result;
      }
    }
    throw new WrennError("STREAM_ENDED", "exec stream: the connection closed before the command exited");
  }

  /**
   * Starts a command that runs on without this client (`POST /v1/sandboxes/{id}/exec` with
   * `background: true`) and answers at once with its command id. With `callbackUrl` the edge POSTs
   * the result there when it ended (exit code, output head and tail, duration), signed with the
   * team's callback secret; `history()` shows it too.
   */
  async start(
    cmd: string,
    options: Omit<CommandOptions, "signal" | "timeoutSec"> & { callbackUrl?: string } = {},
  ): Promise<BackgroundCommandInfo> {
    return this.api.json<BackgroundCommandInfo>("POST", `/v1/sandboxes/${segment(this.sandboxId)}/exec`, {
      json: { cmd, ...options, background: true },
    });
  }

  /** A page of the sandbox's command history, newest first (kept after the sandbox ended). */
  async history(options: CommandPageOptions = {}): Promise<CommandPageInfo> {
    return listCommandHistory(this.api, this.sandboxId, options);
  }
}

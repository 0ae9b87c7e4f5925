import { agentErrorToServiceError } from "../../clients/agent.js";
import type { TeamContext } from "../context.js";
import { toBase64Url } from "../crypto.js";
import { loadRunningSandbox } from "./load.js";

/** Input of `execCommand`. */
export interface ExecInput {
  cmd: string;
  /** Without args, `cmd` is a shell script run by `/bin/bash -l -c`. */
  args?: string[];
  envs?: Record<string, string>;
  cwd?: string;
  user?: string;
  timeoutSec?: number;
  /** Text written to the command's stdin. */
  stdin?: string;
}

/** A finished command. Output is text when both streams are valid UTF-8, else both are base64. */
export interface ExecResult {
  stdout: string;
  stderr: string;
  exitCode: number;
  encoding: "utf-8" | "base64";
  error?: string;
  truncated: boolean;
  durationMs: number;
}

/** Seconds a command runs when the caller gives no timeout. */
export const defaultExecTimeoutSec = 60;

/** Extra time the agent call gets beyond the command's own timeout. */
const execCallSlackMs = 15_000;

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Decodes bytes as UTF-8, or returns undefined when they are not valid UTF-8. */
export function decodeUtf8(bytes: Uint8Array): string | undefined {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** Standard base64 (with padding) of bytes. */
export function toBase64(bytes: Uint8Array): string {
  const url = toBase64Url(bytes).replace(/-/g, "+").replace(/_/g, "/");
  return url + "=".repeat((4 - (url.length % 4)) % 4);
}

/** The program and arguments to run: a bare `cmd` goes through a login shell. */
export function commandLine(input: { cmd: string; args?: string[] }): { cmd: string; args: string[] } {
  return input.args === undefined
    ? { cmd: "/bin/bash", args: ["-l", "-c", input.cmd] }
    : { cmd: input.cmd, args: input.args };
}

/** Runs a command in a running sandbox and returns its collected output. */
export async function execCommand(ctx: TeamContext, sandboxId: string, input: ExecInput): Promise<ExecResult> {
  const { agent } = await loadRunningSandbox(ctx, sandboxId);
  const timeoutSec = input.timeoutSec ?? defaultExecTimeoutSec;
  let res: Awaited<ReturnType<typeof agent.exec>>;
  try {
    res = await agent.exec(
      {
        sandboxId,
        ...commandLine(input),
        envs: input.envs ?? {},
        cwd: input.cwd ?? "",
        user: input.user ?? "",
        timeoutSec,
        stdin: input.stdin === undefined ? new Uint8Array() : new TextEncoder().encode(input.stdin),
      },
      { timeoutMs: timeoutSec * 1000 + execCallSlackMs },
    );
  } catch (err) {
    throw agentErrorToServiceError(err, "exec");
  }
  const stdout = decodeUtf8(res.stdout);
  const stderr = decodeUtf8(res.stderr);
  const asText = stdout !== undefined && stderr !== undefined;
  const result: ExecResult = {
    stdout: asText ? stdout : toBase64(res.stdout),
    stderr: asText ? stderr : toBase64(res.stderr),
    exitCode: res.exitCode,
    encoding: asText ? "utf-8" : "base64",
    truncated: res.truncated,
    durationMs: res.durationMs,
  };
  if (res.error) result.error = res.error;
  return result;
}

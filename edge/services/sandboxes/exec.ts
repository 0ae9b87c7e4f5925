import { agentErrorToServiceError } from "../../clients/agent.js";
import type { TeamContext } from "../context.js";
import { ServiceError } from "../errors.js";
import { type ExecOutput, execResultJson } from "./exec-json.js";
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

/**
 * A finished command, as the answer's JSON has it (built by `execResultJson`). Output is text when
 * both streams are valid UTF-8, else both are base64.
 */
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

const base64Chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const base64Codes = Uint8Array.from(base64Chars, (c) => c.charCodeAt(0));
const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
/** Two output characters per 12 input bits, packed as they lie in memory: half the stores per byte. */
const base64Pairs = (() => {
  const pairs = new Uint16Array(4096);
  for (let i = 0; i < 4096; i++) {
    const hi = base64Codes[i >> 6] as number;
    const lo = base64Codes[i & 63] as number;
    pairs[i] = littleEndian ? hi | (lo << 8) : (hi << 8) | lo;
  }
  return pairs;
})();
const asciiDecoder = new TextDecoder();

type NativeBase64 = Uint8Array & { toBase64?: () => string };
type BufferLike = { from(b: ArrayBufferLike, offset: number, length: number): { toString(enc: "base64"): string } };

/**
 * Standard base64 (with padding) of bytes, in one pass. Uses the runtime's native encoder when it has
 * one (`Uint8Array.prototype.toBase64`; Node's `Buffer`, also on Workers with nodejs_compat), else a
 * table encoder that writes two characters per store and decodes the ASCII once. (It replaced a
 * string built one `String.fromCharCode` at a time, which took seconds for 16 MiB.)
 */
export function toBase64(bytes: Uint8Array): string {
  const native = (bytes as NativeBase64).toBase64;
  if (typeof native === "function") return native.call(bytes);
  const buffer = (globalThis as { Buffer?: BufferLike }).Buffer;
  if (buffer !== undefined) return buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("base64");
  return toBase64Portable(bytes);
}

/** The table encoder of `toBase64`, for runtimes without a native one (exported for its tests). */
export function toBase64Portable(bytes: Uint8Array): string {
  const length = bytes.length;
  const whole = length - (length % 3);
  const out = new Uint8Array(Math.ceil(length / 3) * 4);
  const out16 = new Uint16Array(out.buffer, 0, out.length >> 1);
  let o = 0;
  for (let i = 0; i < whole; i += 3) {
    const n = ((bytes[i] as number) << 16) | ((bytes[i + 1] as number) << 8) | (bytes[i + 2] as number);
    out16[o++] = base64Pairs[n >>> 12] as number;
    out16[o++] = base64Pairs[n & 4095] as number;
  }
  const rest = length - whole;
  if (rest > 0) {
    const n = ((bytes[whole] as number) << 16) | (rest === 2 ? (bytes[whole + 1] as number) << 8 : 0);
    let p = o * 2;
    out[p++] = base64Codes[n >>> 18] as number;
    out[p++] = base64Codes[(n >>> 12) & 63] as number;
    out[p++] = rest === 2 ? (base64Codes[(n >>> 6) & 63] as number) : 61;
    out[p] = 61;
  }
  return asciiDecoder.decode(out);
}

/**
 * Unary exec calls one edge process runs at once. Each holds a command's whole output (up to 16 MiB
 * per stream, then its JSON answer) until it answers, so the cap bounds the memory exec can take; calls
 * over it are refused at once with RATE_LIMITED rather than queued. Per process (per isolate on
 * Workers): it protects the process, not the fleet; team quotas do that.
 */
export const maxConcurrentExecs = 16;
let execsRunning = 0;

/** The program and arguments to run: a bare `cmd` goes through a login shell. */
export function commandLine(input: { cmd: string; args?: string[] }): { cmd: string; args: string[] } {
  return input.args === undefined
    ? { cmd: "/bin/bash", args: ["-l", "-c", input.cmd] }
    : { cmd: input.cmd, args: input.args };
}

/**
 * Runs a command in a running sandbox and returns its collected output as the JSON of an
 * {@link ExecResult} (UTF-8 bytes, built without a string of the whole output: see exec-json.ts).
 */
export async function execCommand(
  ctx: TeamContext,
  sandboxId: string,
  input: ExecInput,
): Promise<Uint8Array<ArrayBuffer>> {
  if (execsRunning >= maxConcurrentExecs) {
    throw new ServiceError(
      "RATE_LIMITED",
      `this API server is running ${maxConcurrentExecs} exec calls already; retry shortly or use exec/stream`,
      { details: { retryAfterSec: 1 } },
    );
  }
  execsRunning++;
  try {
    // The answer is built under the cap too: it is the largest copy of the output.
    return await execResultJson(await runExec(ctx, sandboxId, input));
  } finally {
    execsRunning--;
  }
}

async function runExec(ctx: TeamContext, sandboxId: string, input: ExecInput): Promise<ExecOutput> {
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
  return {
    stdout: res.stdout,
    stderr: res.stderr,
    exitCode: res.exitCode,
    truncated: res.truncated,
    durationMs: res.durationMs,
    ...(res.error ? { error: res.error } : {}),
  };
}

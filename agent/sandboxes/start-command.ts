import { readFile } from "node:fs/promises";
import { DEFAULT_USER, DEFAULT_WORKDIR } from "../envd-client.js";
import { AgentError } from "../errors.js";
import type { GuestEnvd } from "./guest-envd.js";
import { GuestIo } from "./guest-io.js";

/**
 * A built template's defaults and start command (manifest.json: `defaultUser`, `workdir`, `start`, written
 * by agent/builds/). On the runtimes without a memory snapshot, each sandbox of the template runs the
 * start command at its start (in the background, as the template's user, in its working directory, with
 * its environment), and the create answers once the ready command exits 0: polled, for at most
 * READY_TIMEOUT_MS, after which the create fails with a message that says so (sooner when the start
 * command ended and the ready command still fails ENDED_GRACE_MS later).
 */

export const READY_TIMEOUT_MS = 120_000;
const READY_POLL_MS = 250;
/** How long the ready command may still take after the start command ended (it may have left a daemon). */
const ENDED_GRACE_MS = 5_000;
/** One run of the ready command may take this long. */
const READY_CHECK_TIMEOUT_SEC = 10;
const SHELL = "/bin/bash";
const USER_NAME = /^[a-z_][a-z0-9_-]{0,31}$/;

export interface TemplateStart {
  user: string;
  workdir: string;
  start: { cmd: string; readyCmd: string } | undefined;
}

/** Reads a template's defaults; an installed image (no such fields) gives the sandbox defaults. */
export async function readTemplateStart(manifestPath: string): Promise<TemplateStart> {
  let m: { defaultUser?: unknown; workdir?: unknown; start?: { cmd?: unknown; readyCmd?: unknown } | null } = {};
  try {
    m = JSON.parse(await readFile(manifestPath, "utf8")) ?? {};
  } catch {
    // No manifest: the create already checked it exists; defaults then.
  }
  const user = typeof m.defaultUser === "string" && USER_NAME.test(m.defaultUser) ? m.defaultUser : DEFAULT_USER;
  const workdir = typeof m.workdir === "string" && m.workdir.startsWith("/") ? m.workdir : DEFAULT_WORKDIR;
  const cmd = m.start?.cmd;
  const readyCmd = m.start?.readyCmd;
  return {
    user,
    workdir,
    start:
      typeof cmd === "string" && cmd !== ""
        ? { cmd, readyCmd: typeof readyCmd === "string" ? readyCmd : "" }
        : undefined,
  };
}

/** Starts the template's start command in the guest and waits for its ready command to pass. */
export async function runStartCommand(
  sandboxId: string,
  envd: GuestEnvd,
  template: TemplateStart,
  envs: Record<string, string>,
  options: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<void> {
  const { start } = template;
  if (!start) return;
  const io = new GuestIo({ envdOf: () => envd });
  const signal = options.signal ?? new AbortController().signal;
  const base = { sandboxId, envs, cwd: template.workdir, user: template.user };
  const { pid } = await io.startBackground(
    { ...base, cmd: SHELL, args: ["-c", start.cmd], timeoutSec: 0 },
    undefined,
    signal,
  );
  if (start.readyCmd === "") return;
  const timeoutMs = options.timeoutMs ?? READY_TIMEOUT_MS;
  const deadline = performance.now() + timeoutMs;
  let last = "";
  let endedAt: number | undefined;
  for (;;) {
    const r = await io.exec(
      { ...base, cmd: SHELL, args: ["-c", start.readyCmd], timeoutSec: READY_CHECK_TIMEOUT_SEC },
      undefined,
      signal,
    );
    if (r.exitCode === 0) return;
    last = `${r.stdout.toString()}${r.stderr.toString()}`.trim().slice(-300);
    // A start command that ended may have left a daemon behind (`service x start`): its ready command
    // gets ENDED_GRACE_MS more, then the create fails saying the command ended, not at the timeout.
    if (endedAt === undefined) {
      const alive = await io.exec(
        { ...base, user: "root", cmd: SHELL, args: ["-c", `kill -0 ${pid}`], timeoutSec: READY_CHECK_TIMEOUT_SEC },
        undefined,
        signal,
      );
      if (alive.exitCode !== 0) endedAt = performance.now();
    }
    if (endedAt !== undefined && performance.now() - endedAt > ENDED_GRACE_MS) {
      throw new AgentError(
        "FAILED_PRECONDITION",
        "START_COMMAND_EXITED",
        `the template's start command (${start.cmd}) ended and its ready command (${start.readyCmd}) did not pass${last ? `: ${last}` : ""}`,
      );
    }
    if (performance.now() + READY_POLL_MS > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, READY_POLL_MS));
  }
  throw new AgentError(
    "DEADLINE_EXCEEDED",
    "START_COMMAND_NOT_READY",
    `the template's ready command (${start.readyCmd}) did not pass within ${Math.round(timeoutMs / 1000)} s of its start command${last ? `: ${last}` : ""}`,
  );
}

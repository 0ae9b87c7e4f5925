import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { dirname } from "node:path";
import { filesLayout } from "../agent/layout.js";
import type { CliEnvironment } from "./config.js";
import { CliError, exitCodes } from "./errors.js";
import { packageRoot } from "./paths.js";

/** A host agent the CLI started as its child. */
export interface LocalAgent {
  /** Base URL, e.g. http://127.0.0.1:5007 */
  url: string;
  token: string;
  pid: number;
  /** Resolves with the exit code when the agent exits. */
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when it has exited. */
  stop(graceMs?: number): Promise<void>;
}

/** Options of `startLocalAgent`. */
export interface LocalAgentOptions {
  env: CliEnvironment;
  host: string;
  port: number;
  token: string;
  /** `auto` picks firecracker (KVM) > qemu (KVM) > gvisor > qemu (TCG); namespace only when named. */
  runtime: string;
  /** Where the agent's output goes; undefined: this process's stdout/stderr. */
  logFile?: string;
  /** How long it may take to answer /health. */
  readyTimeoutMs?: number;
  /** Called with the agent's PID as soon as it is spawned, before it answers. */
  onSpawned?: (pid: number) => void;
}

/** Whether a TCP port is free on a host. */
export async function portIsFree(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

/** A free loopback port chosen by the kernel. */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * The agent's bearer token: AGENT_TOKEN when set, else the agent's own token file under its state
 * root (created 0600 when absent, exactly as the agent would), so a restarted agent keeps its token.
 */
export async function resolveAgentToken(env: CliEnvironment): Promise<string> {
  const configured = env.raw.AGENT_TOKEN;
  if (configured && configured.length >= 16) return configured;
  const file = filesLayout(env.filesRoot, env.agentStateDir).tokenFile;
  const existing = (await readFile(file, "utf8").catch(() => "")).trim();
  if (existing.length >= 16) return existing;
  const token = randomBytes(32).toString("hex");
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  try {
    await writeFile(file, `${token}\n`, { mode: 0o600, flag: "wx" });
    return token;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return (await readFile(file, "utf8")).trim();
    throw err;
  }
}

async function tail(file: string | undefined, lines = 30): Promise<string> {
  if (!file) return "";
  const text = await readFile(file, "utf8").catch(() => "");
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

/** Starts the agent (`agent/main.ts`, through `bin/agent.js`) as a child process and waits until it answers /health. */
export async function startLocalAgent(options: LocalAgentOptions): Promise<LocalAgent> {
  const { env } = options;
  if (!(await portIsFree(options.port, options.host))) {
    throw new CliError(`port ${options.port} on ${options.host} is taken, so the agent cannot listen there`, {
      exitCode: exitCodes.usage,
      hint: "stop what uses it, or choose another port with WRENN_AGENT_PORT (or --listen)",
    });
  }
  const childEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(env.raw)) if (v !== undefined) childEnv[k] = v;
  Object.assign(childEnv, {
    AGENT_FILES_ROOTDIR: env.filesRoot,
    AGENT_LISTEN_ADDRESS: `${options.host.includes(":") ? `[${options.host}]` : options.host}:${options.port}`,
    AGENT_TOKEN: options.token,
    AGENT_RUNTIME: options.runtime,
  });
  let stdio: Array<"ignore" | "inherit" | number> = ["ignore", "inherit", "inherit"];
  let logFd: number | undefined;
  if (options.logFile) {
    await mkdir(dirname(options.logFile), { recursive: true });
    logFd = openSync(options.logFile, "a");
    stdio = ["ignore", logFd, logFd];
  }
  // bin/agent.js runs agent/main.ts from a cached bundle (or through tsx): it starts about twice as fast.
  const child: ChildProcess = spawn(process.execPath, ["bin/agent.js"], {
    cwd: packageRoot,
    env: childEnv,
    stdio,
    // Its own process group: a terminal Ctrl-C reaches only the CLI, which destroys sandboxes
    // through the agent before it stops the agent.
    detached: true,
  });
  if (logFd !== undefined) closeSync(logFd);
  const pid = child.pid;
  if (pid === undefined) throw new CliError("could not start the agent process");
  options.onSpawned?.(pid);
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code, signal) => {
      exitCode = code ?? (signal ? 128 : null);
      resolve(exitCode);
    }),
  );
  const host = options.host === "0.0.0.0" || options.host === "::" ? "127.0.0.1" : options.host;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${options.port}`;
  const deadline = Date.now() + (options.readyTimeoutMs ?? 60_000);
  for (;;) {
    if (exitCode !== undefined) {
      throw new CliError(`the agent exited (code ${exitCode}) before it was ready`, {
        hint: `${options.logFile ? `its log (${options.logFile}) ends with:\n${await tail(options.logFile)}` : "see its output above"}`,
      });
    }
    try {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2_000) });
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new CliError(
        `the agent did not answer ${url}/health within ${(options.readyTimeoutMs ?? 60_000) / 1000}s`,
        {
          hint: options.logFile ? `see ${options.logFile}` : "see its output above",
        },
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    token: options.token,
    pid,
    exited,
    async stop(graceMs = 10_000) {
      if (exitCode !== undefined) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

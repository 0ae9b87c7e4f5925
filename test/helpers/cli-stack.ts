import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, freeSlotRange, removeAgentLeftovers, suiteRuntime } from "./agent-process.js";

/**
 * A real Wrenn stack for CLI, SDK and quickstart tests: `wrenn up` (edge on Node + PGlite + a real
 * agent with the namespace runtime + the real guest image from /var/lib/wrenn), in a temp data dir,
 * on random ports, with a unique network prefix and slot range, egress off, and its own agent state
 * directory. `stop()` sends SIGTERM (which destroys the sandboxes), and makes sure the agent is
 * gone and the temp directories removed, even when `up` misbehaved.
 */

export const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

/** Images and kernels root: AGENT_FILES_ROOTDIR as the agent reads it (default /var/lib/wrenn). */
export const filesRoot = process.env.AGENT_FILES_ROOTDIR || "/var/lib/wrenn";

/** The guest image every stack test needs; built by `npm run image -- build`. */
export const imageManifest = join(filesRoot, "images/minimal/manifest.json");

/** Why a stack test cannot run here, or undefined when it can. */
export async function stackUnavailable(): Promise<string | undefined> {
  if (typeof process.getuid === "function" && process.getuid() !== 0) {
    return "needs root (network namespaces, cgroups, overlay mounts for the namespace runtime)";
  }
  const found = await readFile(imageManifest, "utf8").then(
    () => true,
    () => false,
  );
  return found ? undefined : `needs the guest image (${imageManifest}); build it with: npm run image -- build`;
}

export { freePort, freeSlotRange, removeAgentLeftovers };

/** A network prefix (netns, interfaces, firewall tables) no other test agent uses. */
export function uniqueNetPrefix(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  return `c${Array.from(randomBytes(4), (b) => alphabet[b % alphabet.length]).join("")}`;
}

/** Environment that confines a stack to temp dirs, random ports and a unique network prefix. */
export interface StackEnvironment {
  env: Record<string, string>;
  port: number;
  dataDir: string;
  stateDir: string;
  configFile: string;
  adminKey: string;
  /** Removes the temp directories and what the agent leaves behind (netns, veths, nft table, cgroup parents). */
  cleanup(): Promise<void>;
}

/** Builds an isolated environment for `wrenn up` (and for CLI calls against it). */
export async function stackEnvironment(options: { adminKey?: boolean } = {}): Promise<StackEnvironment> {
  const root = await mkdtemp(join(tmpdir(), "wrenn-cli-test-"));
  const port = await freePort();
  const adminKey = `wrn_test_${randomBytes(16).toString("hex")}`;
  const prefix = uniqueNetPrefix();
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !k.startsWith("WRENN_") && !k.startsWith("AGENT_") && !k.startsWith("npm_")) env[k] = v;
  }
  Object.assign(env, {
    WRENN_PORT: String(port),
    WRENN_DATA_DIR: join(root, "data"),
    WRENN_AGENT_PORT: String(await freePort()),
    // The namespace runtime, or gVisor in the "integration-gvisor" project (WRENN_TEST_RUNTIME).
    WRENN_RUNTIME: suiteRuntime(),
    AGENT_FILES_ROOTDIR: filesRoot,
    WRENN_CONFIG: join(root, "config.json"),
    AGENT_STATE_DIR: join(root, "agent"),
    AGENT_NET_PREFIX: prefix,
    AGENT_NET_CIDR: await freeSlotRange(),
    AGENT_EGRESS: "off",
  });
  if (options.adminKey !== false) env.WRENN_ADMIN_API_KEY = adminKey;
  return {
    env,
    port,
    dataDir: join(root, "data"),
    stateDir: join(root, "agent"),
    configFile: join(root, "config.json"),
    adminKey,
    cleanup: async () => {
      await removeAgentLeftovers(prefix);
      await rm(root, { recursive: true, force: true });
    },
  };
}

/** A running `wrenn up`. */
export interface RunningStack {
  apiUrl: string;
  apiKey: string;
  /** Environment for CLI calls: WRENN_API_URL and WRENN_API_KEY set. */
  cliEnv: Record<string, string>;
  /** What `up` printed so far. */
  stdout(): string;
  stderr(): string;
  /** PID of the `up` process (or of npm when started through `npm start`). */
  pid: number;
  /** PID of the local agent, once `up` reported it. */
  agentPid(): number | undefined;
  /** SIGTERM, wait for a clean exit (code returned), then make sure nothing is left. */
  stop(): Promise<number | null>;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts `command args` (by default `node bin/wrenn.js up`) in the stack environment and waits for
 * "Wrenn is ready at …".
 */
export async function startStack(
  stack: StackEnvironment,
  options: { command?: string; args?: string[]; readyTimeoutMs?: number } = {},
): Promise<RunningStack> {
  const child: ChildProcess = spawn(
    options.command ?? process.execPath,
    options.args ?? [join(repoRoot, "bin/wrenn.js"), "up"],
    // Its own process group, signalled as a whole the way a terminal's Ctrl-C or a service manager
    // does: `npm start` runs the CLI under `sh -c`, which would not pass a signal sent to npm alone on.
    { cwd: repoRoot, env: stack.env, stdio: ["ignore", "pipe", "pipe"], detached: true },
  );
  const pid = child.pid;
  if (pid === undefined) throw new Error("could not start wrenn up");
  const watched = watchChild(child);
  const { exited } = watched;
  const agentPid = () => {
    const match = /local agent ready \(pid (\d+)\)/.exec(watched.stderr());
    return match ? Number(match[1]) : undefined;
  };
  const stop = async (): Promise<number | null> => {
    const signalGroup = (signal: NodeJS.Signals) => {
      try {
        process.kill(-pid, signal);
      } catch {
        // already gone
      }
    };
    if (watched.exitCode() === undefined) signalGroup("SIGTERM");
    const timer = setTimeout(() => signalGroup("SIGKILL"), 90_000);
    const code = await exited;
    // Under `npm start` the CLI is a grandchild: wait until the whole group has finished cleaning up.
    for (let i = 0; i < 900 && alive(-pid); i++) await new Promise((r) => setTimeout(r, 100));
    clearTimeout(timer);
    const agent = agentPid();
    if (agent !== undefined && alive(agent)) {
      process.kill(agent, "SIGKILL");
      await new Promise((r) => setTimeout(r, 500));
    }
    return code;
  };
  const deadline = Date.now() + (options.readyTimeoutMs ?? 120_000);
  while (!/Wrenn is ready at (http:\/\/\S+)/.test(watched.stdout())) {
    if (watched.exitCode() !== undefined || Date.now() > deadline) {
      await stop();
      throw new Error(
        `wrenn up did not get ready (exit ${watched.exitCode()}):\n${watched.stdout()}\n${watched.stderr()}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const apiUrl = /Wrenn is ready at (http:\/\/\S+)/.exec(watched.stdout())?.[1] ?? "";
  const apiKey = stack.env.WRENN_ADMIN_API_KEY ?? /Admin API key[^\n]*\n\n\s+(\S+)/.exec(watched.stdout())?.[1] ?? "";
  return {
    apiUrl,
    apiKey,
    cliEnv: { ...stack.env, WRENN_API_URL: apiUrl, WRENN_API_KEY: apiKey },
    stdout: watched.stdout,
    stderr: watched.stderr,
    pid,
    agentPid,
    stop,
  };
}

/** The result of one CLI run. */
export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `wrenn <args>` (through the package bin) and collects its output. */
export async function runWrenn(
  args: string[],
  env: Record<string, string>,
  options: { input?: string | Buffer; timeoutMs?: number; cwd?: string } = {},
): Promise<CliRun> {
  const child = spawn(process.execPath, [join(repoRoot, "bin/wrenn.js"), ...args], {
    cwd: options.cwd ?? repoRoot,
    env,
    stdio: ["pipe", "pipe", "pipe"],
  });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on("data", (d: Buffer) => out.push(d));
  child.stderr.on("data", (d: Buffer) => err.push(d));
  child.stdin.end(options.input ?? "");
  const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 120_000);
  const code = await new Promise<number | null>((resolve) => child.once("close", (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

/** A `wrenn up` started without waiting for it to be ready, for tests that stop it part-way. */
export interface StartingStack {
  pid: number;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first match of `pattern` in stderr (or stdout); rejects if up exits first or after `timeoutMs`. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  /** SIGKILL to its whole process group (and to `alsoKill`, e.g. the agent in its own group); waits for the exit. */
  kill(alsoKill?: number[]): Promise<void>;
  exited: Promise<number | null>;
}

/** Spawns `command args` (by default `node bin/wrenn.js up`) in the stack environment, in its own process group. */
export function spawnUp(
  stack: StackEnvironment,
  options: { command?: string; args?: string[]; env?: Record<string, string> } = {},
): StartingStack {
  const child = spawn(options.command ?? process.execPath, options.args ?? [join(repoRoot, "bin/wrenn.js"), "up"], {
    cwd: repoRoot,
    env: { ...stack.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error("could not start wrenn up");
  const watched = watchChild(child);
  const { exited } = watched;
  return {
    pid,
    stdout: watched.stdout,
    stderr: watched.stderr,
    exited,
    async waitFor(pattern, timeoutMs = 120_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const match = pattern.exec(watched.stderr()) ?? pattern.exec(watched.stdout());
        if (match) return match;
        if (watched.exitCode() !== undefined || Date.now() > deadline) {
          throw new Error(
            `wrenn up ${watched.exitCode() === undefined ? "timed out" : `exited (${watched.exitCode()})`} before ${pattern}:\n${watched.stdout()}\n${watched.stderr()}`,
          );
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async kill(alsoKill = []) {
      for (const target of [-pid, ...alsoKill]) {
        try {
          process.kill(target, "SIGKILL");
        } catch {
          // already gone
        }
      }
      await exited;
      for (let i = 0; i < 100 && [-pid, ...alsoKill].some((p) => alive(p)); i++)
        await new Promise((r) => setTimeout(r, 100));
    },
  };
}

/** Polls the API's /health until the database is open (no `starting` in the body). */
export async function waitForDatabase(port: number, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const body = await fetch(`http://127.0.0.1:${port}/health`)
      .then((r) => r.json() as Promise<{ starting?: string[] }>)
      .catch(() => undefined);
    if (body && !body.starting) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the API on port ${port} did not open its database within ${timeoutMs / 1000}s`);
}

/** What `watchChild` keeps of a child: its output so far and how it ended. */
export interface WatchedChild {
  stdout(): string;
  stderr(): string;
  /** undefined while it runs. */
  exitCode(): number | null | undefined;
  exited: Promise<number | null>;
}

/** Collects a child's stdout and stderr (those that are pipes) as text and records its exit code. */
export function watchChild(child: ChildProcess): WatchedChild {
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => {
      exitCode = code;
      resolve(code);
    }),
  );
  return { stdout: () => stdout, stderr: () => stderr, exitCode: () => exitCode, exited };
}

/**
 * Writes `dir`/host-packages.json: the real list plus one runtime package whose proof is absent, so
 * that `wrenn up` and `wrenn doctor` find a package missing (a test binds it over the real list).
 */
export async function writeHostPackagesWithMissing(dir: string): Promise<void> {
  const list = JSON.parse(await readFile(join(repoRoot, "scripts/host-packages.json"), "utf8")) as {
    packages: unknown[];
  };
  list.packages.push({
    package: "wrenn-test-missing",
    provides: [],
    proof: "/nonexistent/wrenn-test-proof",
    why: "test",
    roles: ["runtime"],
  });
  await writeFile(join(dir, "host-packages.json"), JSON.stringify(list));
}

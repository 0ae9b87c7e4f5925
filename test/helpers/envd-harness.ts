/**
 * Test harness for envd: runs the real daemon as a child process in debug mode on a random
 * loopback port, and makes sure the Linux account `user` the SDK expects exists.
 *
 * Root is required: envd switches to other users with setuid/setgid, chowns uploads, and the
 * tests create an account. Tests call {@link requireRoot} and skip with that reason otherwise.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Sandbox } from "e2b";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

/** Why envd integration tests skip when not root. */
export const ROOT_REASON = "envd tests need root: envd runs processes as other users (setuid) and chowns files";

/** True when the tests can run (root). */
export const isRoot = process.getuid?.() === 0;

/** A running envd child process. */
export interface EnvdProcess {
  port: number;
  url: string;
  child: ChildProcess;
  /** Everything the daemon wrote to stderr (its JSON log). */
  logs: () => string;
  stop(): Promise<void>;
}

/**
 * Starts envd in debug mode on a random loopback port; extra CLI arguments are appended. By default
 * it runs the sources (`node --import tsx agent/envd/main.ts`); `command` replaces that, e.g. with a
 * built dist/envd/bin/envd, optionally behind a wrapper such as `unshare … tini --`. `debug: false`
 * runs guest mode, which may step the clock and forward ports: only inside a test's own netns.
 */
export async function startEnvdProcess(
  extraArgs: string[] = [],
  opts: { command?: string[]; debug?: boolean } = {},
): Promise<EnvdProcess> {
  const entry = opts.command ?? [process.execPath, "--import", "tsx", join(repoRoot, "agent/envd/main.ts")];
  // Guest mode (no --debug) is only ever used inside a network namespace a test created.
  const mode = opts.debug === false ? [] : ["--debug"];
  const [cmd, ...cmdArgs] = [...entry, ...mode, "--port", "0", "--host", "127.0.0.1", ...extraArgs];
  const child = spawn(cmd as string, cmdArgs, { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const port = await new Promise<number>((resolve, reject) => {
    let stdout = "";
    const timer = setTimeout(() => reject(new Error(`envd did not start in 30 s; stderr:\n${stderr}`)), 30_000);
    child.stdout?.on("data", (d: Buffer) => {
      stdout += d.toString();
      const m = /envd listening on [^\s]+:(\d+)/.exec(stdout);
      if (m?.[1]) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`envd exited with ${code} before listening; stderr:\n${stderr}`));
    });
  });
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    child,
    logs: () => stderr,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** An SDK sandbox bound to one envd (debug mode; no control plane involved). */
export function sdkSandbox(envd: EnvdProcess, opts: { accessToken?: string } = {}): Sandbox {
  return new Sandbox({
    sandboxId: "envdtest",
    envdVersion: "0.6.13",
    debug: true,
    sandboxUrl: envd.url,
    envdAccessToken: opts.accessToken,
  });
}

/**
 * Makes sure the account `user` (home /home/user) exists, as in Wrenn and E2B guest images.
 * Returns a cleanup that removes it only if this call created it.
 */
export function ensureTestUser(): () => void {
  try {
    execFileSync("getent", ["passwd", "user"], { stdio: "ignore" });
    return () => {};
  } catch {
    // uid 1000 may already belong to someone else on a shared host; let useradd pick a free uid.
    execFileSync("useradd", ["--create-home", "--shell", "/bin/bash", "user"], { stdio: "ignore" });
    return () => {
      try {
        execFileSync("userdel", ["--remove", "user"], { stdio: "ignore" });
      } catch {
        // Still in use by a straggler process; leaving the account is harmless.
      }
    };
  }
}

/** A fresh temp directory under /tmp for one test file; remove it in afterAll. */
export function tempRoot(prefix: string): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `wrenn-envd-${prefix}-`));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

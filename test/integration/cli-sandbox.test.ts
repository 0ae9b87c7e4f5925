import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type CliRun,
  freePort,
  freeSlotRange,
  type RunningStack,
  removeAgentLeftovers,
  repoRoot,
  runWrenn,
  type StackEnvironment,
  stackEnvironment,
  stackUnavailable,
  startStack,
  uniqueNetPrefix,
  watchChild,
} from "../helpers/cli-stack.js";

/**
 * The `wrenn` CLI against a real stack started by `wrenn up` itself: edge on Node + PGlite, a real
 * agent with the namespace runtime, the real guest image. Needs root and the image; says why when it
 * skips.
 */

const execFileAsync = promisify(execFile);
const unavailable = await stackUnavailable();

function json<T>(run: CliRun): T {
  expect(run.code, run.stderr).toBe(0);
  return JSON.parse(run.stdout) as T;
}

describe.skipIf(unavailable !== undefined)(
  `wrenn CLI on a real stack${unavailable ? ` (skipped: ${unavailable})` : ""}`,
  () => {
    let stack: StackEnvironment;
    let running: RunningStack;
    let work: string;
    let sandboxId = "";
    const wrenn = (args: string[], options?: Parameters<typeof runWrenn>[2]) => runWrenn(args, running.cliEnv, options);

    beforeAll(async () => {
      stack = await stackEnvironment();
      work = await mkdtemp(join(tmpdir(), "wrenn-cli-files-"));
      running = await startStack(stack);
    });

    afterAll(async () => {
      await running?.stop();
      await stack?.cleanup();
      if (work) await rm(work, { recursive: true, force: true });
    });

    it("up answers /health and registered its local agent as a host", async () => {
      const health = await fetch(`${running.apiUrl}/health`);
      expect(health.status).toBe(200);
      const hosts = json<Array<{ runtime: string; status: string; address: string }>>(await wrenn(["hosts", "--json"]));
      expect(hosts).toHaveLength(1);
      expect(hosts[0]?.runtime).toBe("namespace");
      expect(hosts[0]?.status).toBe("active");
      const table = await wrenn(["hosts"]);
      expect(table.code).toBe(0);
      expect(table.stdout).toMatch(/^ID\s+ADDRESS\s+STATUS\s+RUNTIME/);
    });

    it("sandbox create -q prints only the id; list and get show it running", async () => {
      const created = await wrenn(["sandbox", "create", "-q", "--metadata", "suite=cli", "--timeout", "10m"]);
      expect(created.code, created.stderr).toBe(0);
      sandboxId = created.stdout.trim();
      expect(sandboxId).toMatch(/^[a-z0-9]{20}$/);
      const listed = await wrenn(["sandbox", "list", "--metadata", "suite=cli"]);
      expect(listed.stdout).toContain(sandboxId);
      expect(listed.stdout).toMatch(/running/);
      const info = json<{ id: string; state: string; metadata: Record<string, string> }>(
        await wrenn(["sandbox", "get", sandboxId, "--json"]),
      );
      expect(info).toMatchObject({ id: sandboxId, state: "running", metadata: { suite: "cli" } });
    });

    it("sandbox exec streams output and passes the exit code through", async () => {
      const hello = await wrenn(["sandbox", "exec", sandboxId, "--", "echo", "hello"]);
      expect(hello).toMatchObject({ code: 0, stdout: "hello\n" });
      const failing = await wrenn(["sandbox", "exec", sandboxId, "--", "echo oops >&2; exit 7"]);
      expect(failing.code).toBe(7);
      expect(failing.stderr).toContain("oops");
      const quoted = await wrenn(["sandbox", "exec", sandboxId, "--", "printf", "%s|", "a b", "$HOME"]);
      expect(quoted.stdout).toBe("a b|$HOME|");
      const env = await wrenn([
        "sandbox",
        "exec",
        sandboxId,
        "--env",
        "GREETING=hi there",
        "--",
        "echo $GREETING; whoami",
      ]);
      expect(env.stdout).toBe("hi there\nuser\n");
      const asJsonRun = await wrenn(["sandbox", "exec", sandboxId, "--json", "--", "echo out; exit 3"]);
      expect(asJsonRun.code).toBe(3);
      const asJson = JSON.parse(asJsonRun.stdout) as { stdout: string; exitCode: number };
      expect(asJson).toMatchObject({ stdout: "out\n", exitCode: 3 });
    });

    it("sandbox cp uploads and downloads files byte for byte, and - means stdin/stdout", async () => {
      const payload = randomBytes(5 * 1024 * 1024 + 17);
      await writeFile(join(work, "up.bin"), payload);
      const up = await wrenn(["sandbox", "cp", join(work, "up.bin"), `${sandboxId}:/home/user/up.bin`]);
      expect(up.code, up.stderr).toBe(0);
      const sum = await wrenn(["sandbox", "exec", sandboxId, "--", "sha256sum /home/user/up.bin | cut -d' ' -f1"]);
      const { createHash } = await import("node:crypto");
      expect(sum.stdout.trim()).toBe(createHash("sha256").update(payload).digest("hex"));
      const down = await wrenn(["sandbox", "cp", `${sandboxId}:/home/user/up.bin`, join(work, "down.bin")]);
      expect(down.code, down.stderr).toBe(0);
      expect(Buffer.compare(await readFile(join(work, "down.bin")), payload)).toBe(0);
      const piped = await wrenn(["sandbox", "cp", "-", `${sandboxId}:notes.txt`], { input: "from stdin\n" });
      expect(piped.code, piped.stderr).toBe(0);
      const back = await wrenn(["sandbox", "cp", `${sandboxId}:notes.txt`, "-"]);
      expect(back.stdout).toBe("from stdin\n");
      const missing = await wrenn(["sandbox", "cp", `${sandboxId}:/nope/nothing`, join(work, "x")]);
      expect(missing.code).toBe(4);
    });

    it("pause and resume keep files; a paused sandbox refuses exec with a hint", async () => {
      const paused = await wrenn(["sandbox", "pause", sandboxId]);
      expect(paused.code, paused.stderr).toBe(0);
      expect(paused.stdout).toContain("paused");
      const refused = await wrenn(["sandbox", "exec", sandboxId, "--", "true"]);
      expect(refused.code).toBe(5);
      expect(refused.stderr).toMatch(/hint:/);
      const resumed = await wrenn(["sandbox", "resume", sandboxId]);
      expect(resumed.code, resumed.stderr).toBe(0);
      const cat = await wrenn(["sandbox", "cp", `${sandboxId}:notes.txt`, "-"]);
      expect(cat.stdout).toBe("from stdin\n");
    });

    it("sandbox timeout moves the end time", async () => {
      const before = Date.now();
      const info = json<{ endAt: string; onTimeout: string }>(
        await wrenn(["sandbox", "timeout", sandboxId, "2h", "--on-timeout", "pause", "--json"]),
      );
      expect(info.onTimeout).toBe("pause");
      const endsIn = Date.parse(info.endAt) - before;
      expect(endsIn).toBeGreaterThan(7_100_000);
      expect(endsIn).toBeLessThan(7_300_000);
    });

    it("errors say what to do and exit with meaningful codes", async () => {
      const unknown = await wrenn(["sandbox", "get", "zzzzzzzzzzzzzzzzzzzz"]);
      expect(unknown.code).toBe(4);
      expect(unknown.stderr).toMatch(/hint: check the id/);
      const badKey = await runWrenn(["sandbox", "list"], {
        ...running.cliEnv,
        WRENN_API_KEY: "wrn_not_a_key_000000000000",
      });
      expect(badKey.code).toBe(3);
      const noKey = await runWrenn(["sandbox", "list"], { ...running.cliEnv, WRENN_API_KEY: "" });
      expect(noKey.code).toBe(3);
      expect(noKey.stderr).toContain("WRENN_API_KEY");
      const usage = await wrenn(["sandbox", "exec", sandboxId]);
      expect(usage.code).toBe(2);
      expect((await wrenn(["bogus"])).code).toBe(2);
      const down = await runWrenn(["sandbox", "list"], { ...running.cliEnv, WRENN_API_URL: "http://127.0.0.1:1" });
      expect(down.code).toBe(6);
      expect(down.stderr).toMatch(/npm start/);
    });

    it("the config file supplies URL and key when the environment does not", async () => {
      await writeFile(stack.configFile, JSON.stringify({ apiUrl: running.apiUrl, apiKey: running.apiKey }));
      const env = { ...running.cliEnv, WRENN_API_URL: "", WRENN_API_KEY: "" };
      const listed = await runWrenn(["sandbox", "list", "--json"], env);
      expect(listed.code, listed.stderr).toBe(0);
      await rm(stack.configFile);
    });

    it("keys: a created key works until it is revoked", async () => {
      const created = json<{ id: string; secret: string }>(await wrenn(["keys", "create", "--name", "ci", "--json"]));
      const env = { ...running.cliEnv, WRENN_API_KEY: created.secret };
      expect((await runWrenn(["sandbox", "list"], env)).code).toBe(0);
      const listed = await wrenn(["keys", "list"]);
      expect(listed.stdout).toContain(created.id);
      expect((await wrenn(["keys", "revoke", created.id])).code).toBe(0);
      expect((await runWrenn(["sandbox", "list"], env)).code).toBe(3);
    });

    it("wrenn agent --register joins the API as a second host; drain, stop and delete it", async () => {
      const stateDir = await mkdtemp(join(tmpdir(), "wrenn-cli-agent-"));
      const port = await freePort();
      const prefix = uniqueNetPrefix();
      const env = {
        ...stack.env,
        AGENT_STATE_DIR: stateDir,
        AGENT_NET_PREFIX: prefix,
        AGENT_NET_CIDR: await freeSlotRange(),
        // The key travels in the environment, never in argv (where `ps` shows it).
        WRENN_API_KEY: running.apiKey,
      };
      const child = spawn(
        process.execPath,
        [
          join(repoRoot, "bin/wrenn.js"),
          "agent",
          "--listen",
          `127.0.0.1:${port}`,
          "--runtime",
          "namespace",
          "--register",
          running.apiUrl,
        ],
        { cwd: repoRoot, env, stdio: ["ignore", "ignore", "pipe"] },
      );
      const watched = watchChild(child);
      try {
        for (
          let i = 0;
          i < 1200 && !watched.stderr().includes("registered with") && watched.exitCode() === undefined;
          i++
        ) {
          await new Promise((r) => setTimeout(r, 100));
        }
        expect(watched.stderr(), `wrenn agent exited with ${watched.exitCode()}`).toContain("registered with");
        const hosts = json<Array<{ id: string; address: string; status: string }>>(await wrenn(["hosts", "--json"]));
        const second = hosts.find((h) => h.address === `http://127.0.0.1:${port}`);
        expect(hosts).toHaveLength(2);
        expect(second?.status).toBe("active");
        const drained = await wrenn(["hosts", "drain", second?.id ?? ""]);
        expect(drained.stdout).toContain("draining");
        child.kill("SIGTERM");
        expect(await watched.exited).toBe(0);
        expect((await wrenn(["hosts", "delete", second?.id ?? ""])).code).toBe(0);
        expect(json<unknown[]>(await wrenn(["hosts", "--json"]))).toHaveLength(1);
      } finally {
        child.kill("SIGKILL");
        await removeAgentLeftovers(prefix);
        await rm(stateDir, { recursive: true, force: true });
      }
    });

    it("kill destroys the sandbox; stopping up destroys what is left", async () => {
      const killed = await wrenn(["sandbox", "kill", sandboxId]);
      expect(killed.code, killed.stderr).toBe(0);
      const info = json<{ state: string; stopReason: string }>(await wrenn(["sandbox", "get", sandboxId, "--json"]));
      expect(info).toMatchObject({ state: "stopped", stopReason: "killed" });
      const leftover = (await wrenn(["sandbox", "create", "-q"])).stdout.trim();
      expect(leftover).toMatch(/^[a-z0-9]{20}$/);
      const code = await running.stop();
      expect(code).toBe(0);
      expect(running.stderr()).toContain(`destroyed ${leftover}`);
      // The namespace runtime names each sandbox's bubblewrap after its id: none may be left running.
      const { stdout } = await execFileAsync("ps", ["-eo", "args"]);
      expect(stdout).not.toContain(leftover);
    });
  },
);

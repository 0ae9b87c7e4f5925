import { createHash, randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Sandbox, WrennClient, WrennError } from "../../sdk/index.js";
import { suiteRuntime } from "../helpers/agent-process.js";
import {
  type RunningStack,
  type StackEnvironment,
  stackEnvironment,
  stackUnavailable,
  startStack,
} from "../helpers/cli-stack.js";

/**
 * The TypeScript SDK against a real stack (`wrenn up`: edge + PGlite + real agent, namespace
 * runtime, real guest image). Needs root and the image; says why when it skips.
 */

const unavailable = await stackUnavailable();

describe.skipIf(unavailable !== undefined)(
  `SDK on a real stack${unavailable ? ` (skipped: ${unavailable})` : ""}`,
  () => {
    let stack: StackEnvironment;
    let running: RunningStack;
    let sandbox: Sandbox;
    const conn = () => ({ apiUrl: running.apiUrl, apiKey: running.apiKey });

    beforeAll(async () => {
      stack = await stackEnvironment();
      running = await startStack(stack);
      sandbox = await Sandbox.create({ ...conn(), metadata: { suite: "sdk" }, timeoutSec: 600 });
    });

    afterAll(async () => {
      await sandbox?.kill().catch(() => {});
      await running?.stop();
      await stack?.cleanup();
    });

    it("creates a running sandbox with an id and an envd token", async () => {
      expect(sandbox.id).toMatch(/^[a-z0-9]{20}$/);
      expect(sandbox.info.state).toBe("running");
      expect(sandbox.envdAccessToken).toBeTruthy();
      const listed = await Sandbox.list({ ...conn(), metadata: { suite: "sdk" } });
      expect(listed.map((s) => s.id)).toContain(sandbox.id);
    });

    it("commands.run returns output and exit code, and streams output while the command runs", async () => {
      const hello = await sandbox.commands.run("echo hello");
      expect(hello).toMatchObject({ stdout: "hello\n", stderr: "", exitCode: 0 });
      const seen: Array<{ data: string; at: number }> = [];
      const started = Date.now();
      const result = await sandbox.commands.run("echo first; sleep 2; echo second >&2; exit 4", {
        onStdout: (data) => seen.push({ data, at: Date.now() - started }),
        onStderr: (data) => seen.push({ data: `err:${data}`, at: Date.now() - started }),
      });
      const finished = Date.now() - started;
      expect(result).toMatchObject({ stdout: "first\n", stderr: "second\n", exitCode: 4 });
      expect(seen.map((s) => s.data)).toEqual(["first\n", "err:second\n"]);
      // "first" arrived while the command was still sleeping, not with the result.
      expect(finished - (seen[0]?.at ?? finished)).toBeGreaterThan(1_000);
    });

    it("commands.stream gives raw bytes (not UTF-8 too) and args run without a shell", async () => {
      const chunks: Uint8Array[] = [];
      for await (const event of sandbox.commands.stream("printf '\\xff\\x00\\x80'")) {
        if (event.type === "stdout") chunks.push(event.data);
      }
      expect(Buffer.concat(chunks)).toEqual(Buffer.from([0xff, 0x00, 0x80]));
      const direct = await sandbox.commands.run("/bin/echo", { args: ["$HOME", "a  b"] });
      expect(direct.stdout).toBe("$HOME a  b\n");
    });

    it("aborting a command kills it in the sandbox", async () => {
      const controller = new AbortController();
      const run = sandbox.commands.run("sleep 300; echo never", { signal: controller.signal });
      setTimeout(() => controller.abort(), 1_000);
      await expect(run).rejects.toThrow();
      await new Promise((r) => setTimeout(r, 1_000));
      const ps = await sandbox.commands.run("pgrep -f 'sleep 30[0]' || true");
      expect(ps.stdout.trim()).toBe("");
    });

    it("files.write / read / list handle text, bytes and a 20 MiB stream", async () => {
      await sandbox.files.write("notes/hello.txt", "hi from the SDK\n");
      expect(await sandbox.files.read("notes/hello.txt")).toBe("hi from the SDK\n");
      const bytes = randomBytes(4096);
      await sandbox.files.write("/tmp/bytes.bin", bytes);
      expect(Buffer.from(await sandbox.files.read("/tmp/bytes.bin", { format: "bytes" }))).toEqual(bytes);

      const total = 20 * 1024 * 1024;
      const hash = createHash("sha256");
      let sent = 0;
      const upload = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent >= total) return controller.close();
          const chunk = randomBytes(Math.min(1024 * 1024, total - sent));
          hash.update(chunk);
          sent += chunk.length;
          controller.enqueue(chunk);
        },
      });
      const written = await sandbox.files.write("/tmp/big.bin", upload);
      expect(written.size).toBe(total);
      const download = createHash("sha256");
      let received = 0;
      for await (const chunk of await sandbox.files.read("/tmp/big.bin", { format: "stream" })) {
        download.update(chunk);
        received += chunk.byteLength;
      }
      expect(received).toBe(total);
      expect(download.digest("hex")).toBe(hash.digest("hex"));

      const entries = await sandbox.files.list("notes");
      expect(entries.map((e) => [e.name, e.type])).toEqual([["hello.txt", "file"]]);
      await sandbox.files.makeDir("notes/sub/deeper");
      await sandbox.files.remove("notes/hello.txt");
      expect((await sandbox.files.list("notes")).map((e) => e.name)).toEqual(["sub"]);
    });

    it("pause and resume keep files; setTimeout moves the end time", async () => {
      await sandbox.files.write("kept.txt", "still here");
      expect((await sandbox.pause()).state).toBe("paused");
      expect(await sandbox.isRunning()).toBe(false);
      await expect(sandbox.commands.run("true")).rejects.toMatchObject({ code: "CONFLICT" });
      expect((await sandbox.resume()).state).toBe("running");
      expect(await sandbox.files.read("kept.txt")).toBe("still here");
      const info = await sandbox.setTimeout(3600, { onTimeout: "pause" });
      expect(info.onTimeout).toBe("pause");
      expect(Date.parse(info.endAt ?? "") - Date.now()).toBeGreaterThan(3_500_000);
    });

    it("errors are WrennErrors with codes; the admin client sees the host", async () => {
      const err = await Sandbox.connect("zzzzzzzzzzzzzzzzzzzz", conn()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WrennError);
      expect(err).toMatchObject({ code: "NOT_FOUND", status: 404 });
      await expect(
        Sandbox.list({ apiUrl: running.apiUrl, apiKey: "wrn_wrong_key_000000000000" }),
      ).rejects.toMatchObject({
        code: "UNAUTHORIZED",
      });
      const client = new WrennClient(conn());
      expect((await client.health()).status).toBe("ok");
      const hosts = await client.hosts.list();
      expect(hosts.map((h) => h.runtime)).toEqual([suiteRuntime()]);
    });

    it("kill stops the sandbox", async () => {
      await sandbox.kill();
      const info = await sandbox.getInfo();
      expect(info.state).toBe("stopped");
      await sandbox.kill();
    });
  },
);

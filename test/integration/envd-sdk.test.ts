/**
 * Drives a real envd (debug mode, random loopback port, running as root) with the official `e2b`
 * SDK 2.51.0, as a user of an E2B sandbox would. Needs root: see envd-harness.ts.
 */

import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { statSync } from "node:fs";
import { CommandExitError, FilesystemEventType, Sandbox } from "e2b";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type EnvdProcess,
  ensureTestUser,
  isRoot,
  ROOT_REASON,
  sdkSandbox,
  startEnvdProcess,
  tempRoot,
} from "../helpers/envd-harness.js";

const until = async (cond: () => boolean | Promise<boolean>, timeoutMs = 10_000) => {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("condition not met in time");
};

describe.skipIf(!isRoot)(`envd with the e2b SDK (${isRoot ? "root" : ROOT_REASON})`, () => {
  let envd: EnvdProcess;
  let sbx: Sandbox;
  let removeUser: () => void;
  const tmp = tempRoot("sdk");
  const dir = tmp.dir;

  beforeAll(async () => {
    removeUser = ensureTestUser();
    envd = await startEnvdProcess();
    sbx = sdkSandbox(envd);
  });

  afterAll(async () => {
    await envd?.stop();
    tmp.remove();
    removeUser?.();
  });

  it("works through the SDK's documented debug mode (Sandbox.create with debug and sandboxUrl)", async () => {
    const viaCreate = await Sandbox.create({ debug: true, sandboxUrl: envd.url });
    expect((await viaCreate.commands.run("echo created")).stdout).toBe("created\n");
  });

  describe("commands", () => {
    it("runs a command as the default user `user` in its home, with stdout and stderr", async () => {
      const r = await sbx.commands.run('echo out; echo err >&2; whoami; pwd; echo "$HOME $USER"');
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toBe("out\nuser\n/home/user\n/home/user user\n");
      expect(r.stderr).toBe("err\n");
    });

    it("turns a non-zero exit into CommandExitError with the code and output", async () => {
      const err = await sbx.commands.run("echo partial; exit 7").catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CommandExitError);
      const exit = err as CommandExitError;
      expect(exit.exitCode).toBe(7);
      expect(exit.stdout).toBe("partial\n");
      expect(exit.error).toBe("exit status 7");
    });

    it("passes envs, cwd and user", async () => {
      const r = await sbx.commands.run('echo "$GREETING"; pwd; id -un', {
        envs: { GREETING: "hello world" },
        cwd: "/tmp",
        user: "root",
      });
      expect(r.stdout).toBe("hello world\n/tmp\nroot\n");
      const rel = await sbx.commands.run("pwd", { cwd: "~" });
      expect(rel.stdout).toBe("/home/user\n");
    });

    it("keeps the user's supplementary groups", async () => {
      const group = `wrenn-envd-grp-${process.pid}`;
      execFileSync("groupadd", [group]);
      try {
        execFileSync("usermod", ["-aG", group, "user"]);
        const r = await sbx.commands.run("id -Gn");
        expect(r.stdout.trim().split(" ")).toContain(group);
      } finally {
        execFileSync("groupdel", [group]);
      }
    });

    it("streams output through callbacks as it is produced", async () => {
      const chunks: string[] = [];
      await sbx.commands.run("for i in 1 2 3; do echo line$i; sleep 0.1; done", {
        onStdout: (d) => void chunks.push(d),
      });
      expect(chunks.join("")).toBe("line1\nline2\nline3\n");
      expect(chunks.length).toBeGreaterThanOrEqual(2);
    });

    it("runs in the background; connect, list, sendStdin, closeStdin and kill", async () => {
      const handle = await sbx.commands.run("cat", { background: true, stdin: true });
      expect(handle.pid).toBeGreaterThan(0);
      const listed = await sbx.commands.list();
      expect(listed.map((p) => p.pid)).toContain(handle.pid);
      expect(listed.find((p) => p.pid === handle.pid)?.args).toEqual(["-l", "-c", "cat"]);

      // A second client attaches to the same live process and sees output from now on.
      const seen: string[] = [];
      const attached = await sbx.commands.connect(handle.pid, { onStdout: (d) => void seen.push(d) });
      await sbx.commands.sendStdin(handle.pid, "first\n");
      await until(() => seen.join("").includes("first"));
      await sbx.commands.closeStdin(handle.pid);
      const result = await attached.wait();
      expect(result.stdout).toContain("first");
      expect((await handle.wait()).exitCode).toBe(0);

      const sleeper = await sbx.commands.run("sleep 600", { background: true });
      expect(await sbx.commands.kill(sleeper.pid)).toBe(true);
      const killed = await sleeper.wait().catch((e: unknown) => e);
      expect(killed).toBeInstanceOf(CommandExitError);
      expect((killed as CommandExitError).error).toBe("signal: killed");
      expect(await sbx.commands.kill(sleeper.pid)).toBe(false);
      expect((await sbx.commands.list()).map((p) => p.pid)).not.toContain(sleeper.pid);
    });

    it("re-attaches after the first stream went away, while the process lives", async () => {
      const handle = await sbx.commands.run("for i in $(seq 1 40); do echo tick$i; sleep 0.1; done", {
        background: true,
      });
      await handle.disconnect();
      await new Promise((r) => setTimeout(r, 1_500));
      const again = await sbx.commands.connect(handle.pid);
      const result = await again.wait();
      expect(result.exitCode).toBe(0);
      expect(result.stdout).toContain("tick40");
      expect(result.stdout).not.toContain("tick1\n");
    });

    it("reports an unknown user as an authentication error", async () => {
      await expect(sbx.commands.run("true", { user: "no-such-user-xyz" })).rejects.toThrow(/invalid username/);
    });
  });

  describe("pty", () => {
    it("creates a terminal, takes input, resizes and is killed", async () => {
      let out = "";
      const decoder = new TextDecoder();
      const term = await sbx.pty.create({
        cols: 80,
        rows: 24,
        onData: (d) => {
          out += decoder.decode(d);
        },
      });
      await sbx.pty.sendInput(term.pid, new TextEncoder().encode("stty size; tty; echo ready-$((6*7))\n"));
      await until(() => out.includes("ready-42"));
      expect(out).toContain("24 80");
      expect(out).toMatch(/\/dev\/pts\/\d+/);

      await sbx.pty.resize(term.pid, { cols: 132, rows: 40 });
      await sbx.pty.sendInput(term.pid, new TextEncoder().encode("stty size\n"));
      await until(() => out.includes("40 132"));

      expect(await sbx.pty.kill(term.pid)).toBe(true);
      const end = await term.wait().catch((e: unknown) => e);
      expect(end).toBeInstanceOf(CommandExitError);
    });
  });

  describe("files", () => {
    it("writes and reads text, bytes, blobs and streams", async () => {
      const info = await sbx.files.write(`${dir}/t/hello.txt`, "héllo\n");
      expect(info).toMatchObject({ path: `${dir}/t/hello.txt`, name: "hello.txt", type: "file" });
      expect(await sbx.files.read(`${dir}/t/hello.txt`)).toBe("héllo\n");

      const bytes = randomBytes(4096);
      await sbx.files.write(`${dir}/t/bin`, bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
      expect(Buffer.from(await sbx.files.read(`${dir}/t/bin`, { format: "bytes" }))).toEqual(bytes);

      await sbx.files.write(`${dir}/t/blob`, new Blob(["blob-data"]));
      expect(await (await sbx.files.read(`${dir}/t/blob`, { format: "blob" })).text()).toBe("blob-data");

      const stream = await sbx.files.read(`${dir}/t/bin`, { format: "stream" });
      const parts: Uint8Array[] = [];
      for await (const c of stream as unknown as AsyncIterable<Uint8Array>) parts.push(c);
      expect(Buffer.concat(parts)).toEqual(bytes);

      const many = await sbx.files.write([
        { path: `${dir}/multi/a.txt`, data: "A" },
        { path: `${dir}/multi/b/c.txt`, data: "C" },
      ]);
      expect(many.map((w) => w.path)).toEqual([`${dir}/multi/a.txt`, `${dir}/multi/b/c.txt`]);
      expect(await sbx.files.read(`${dir}/multi/b/c.txt`)).toBe("C");
    });

    it("writes relative paths into the user's home, owned by the user", async () => {
      const info = await sbx.files.write("envd-sdk-rel/note.txt", "mine");
      expect(info).toMatchObject({ path: "/home/user/envd-sdk-rel/note.txt" });
      const owners = execFileSync("stat", [
        "-c",
        "%U:%G",
        "/home/user/envd-sdk-rel/note.txt",
        "/home/user/envd-sdk-rel",
      ])
        .toString()
        .trim();
      expect(owners).toBe("user:user\nuser:user");
      await sbx.files.remove("envd-sdk-rel");
    });

    it("round-trips a 50 MiB file through streams", async () => {
      const size = 50 * 1024 * 1024;
      const data = randomBytes(size);
      const digest = createHash("sha256").update(data).digest("hex");
      const source = new ReadableStream<Uint8Array>({
        start(controller) {
          for (let off = 0; off < size; off += 1024 * 1024) controller.enqueue(data.subarray(off, off + 1024 * 1024));
          controller.close();
        },
      });
      await sbx.files.write(`${dir}/big.bin`, source);
      expect(statSync(`${dir}/big.bin`).size).toBe(size);
      const back = await sbx.files.read(`${dir}/big.bin`, { format: "stream" });
      const hash = createHash("sha256");
      let total = 0;
      for await (const c of back as unknown as AsyncIterable<Uint8Array>) {
        hash.update(c);
        total += c.byteLength;
      }
      expect(total).toBe(size);
      expect(hash.digest("hex")).toBe(digest);
      const gz = await sbx.files.read(`${dir}/big.bin`, { format: "bytes", gzip: true });
      expect(createHash("sha256").update(gz).digest("hex")).toBe(digest);
    });

    it("lists, makes dirs, renames, removes, checks existence and describes entries", async () => {
      const base = `${dir}/ops`;
      expect(await sbx.files.makeDir(`${base}/a/b`)).toBe(true);
      expect(await sbx.files.makeDir(`${base}/a/b`)).toBe(false);
      await sbx.files.write(`${base}/a/file.txt`, "12345");
      await sbx.files.write(`${base}/a/b/deep.txt`, "x");

      const top = await sbx.files.list(`${base}/a`);
      expect(top.map((e) => [e.name, e.type]).sort()).toEqual([
        ["b", "dir"],
        ["file.txt", "file"],
      ]);
      const deep = await sbx.files.list(`${base}/a`, { depth: 2 });
      expect(deep.map((e) => e.path)).toContain(`${base}/a/b/deep.txt`);
      // E2B's order: depth-first, names sorted at each level.
      await sbx.files.write(`${base}/order/b/x`, "");
      await sbx.files.write(`${base}/order/a/y`, "");
      await sbx.files.write(`${base}/order/a/x`, "");
      await sbx.files.write(`${base}/order/c`, "");
      const ordered = await sbx.files.list(`${base}/order`, { depth: 2 });
      expect(ordered.map((e) => e.path.slice(`${base}/order/`.length))).toEqual(["a", "a/x", "a/y", "b", "b/x", "c"]);

      const info = await sbx.files.getInfo(`${base}/a/file.txt`);
      expect(info).toMatchObject({ name: "file.txt", type: "file", size: 5, permissions: "-rw-r--r--", owner: "user" });
      expect(info.mode).toBe(0o644);
      expect(info.modifiedTime?.getTime()).toBeGreaterThan(Date.now() - 60_000);

      const moved = await sbx.files.rename(`${base}/a/file.txt`, `${base}/moved/here.txt`);
      expect(moved).toMatchObject({ path: `${base}/moved/here.txt`, name: "here.txt" });
      expect(await sbx.files.exists(`${base}/a/file.txt`)).toBe(false);
      expect(await sbx.files.exists(`${base}/moved/here.txt`)).toBe(true);

      await sbx.files.remove(`${base}/a`);
      expect(await sbx.files.exists(`${base}/a`)).toBe(false);
      await expect(sbx.files.getInfo(`${base}/nope`)).rejects.toThrow(/does not exist/);
      await expect(sbx.files.list(`${base}/nope`)).rejects.toThrow();
    });

    it("stores and returns file metadata", async () => {
      const w = await sbx.files.write(`${dir}/meta.txt`, "m", { metadata: { author: "wrenn", purpose: "tests" } });
      expect(w.metadata).toEqual({ author: "wrenn", purpose: "tests" });
      const info = await sbx.files.getInfo(`${dir}/meta.txt`);
      expect(info.metadata).toEqual({ author: "wrenn", purpose: "tests" });
      const listed = await sbx.files.list(dir);
      expect(listed.find((e) => e.name === "meta.txt")?.metadata).toEqual({ author: "wrenn", purpose: "tests" });
      expect(listed.find((e) => e.name === "big.bin")?.metadata).toBeUndefined();
      const xattr = execFileSync("getfattr", [
        "--absolute-names",
        "-n",
        "user.e2b.author",
        "--only-values",
        `${dir}/meta.txt`,
      ]).toString();
      expect(xattr).toBe("wrenn");
    });

    it("watches a directory recursively", async () => {
      const base = `${dir}/watched`;
      await sbx.files.makeDir(`${base}/sub`);
      const events: { name: string; type: string }[] = [];
      const handle = await sbx.files.watchDir(base, (e) => void events.push({ name: e.name, type: e.type }), {
        recursive: true,
      });
      await sbx.files.write(`${base}/top.txt`, "1");
      await sbx.files.write(`${base}/sub/inner.txt`, "2");
      await sbx.files.makeDir(`${base}/sub/newdir`);
      await new Promise((r) => setTimeout(r, 200));
      await sbx.files.write(`${base}/sub/newdir/deeper.txt`, "3");
      await sbx.files.remove(`${base}/top.txt`);
      await sbx.files.rename(`${base}/sub/inner.txt`, `${base}/sub/renamed.txt`);
      await until(
        () =>
          events.some((e) => e.name === "top.txt" && e.type === FilesystemEventType.REMOVE) &&
          events.some((e) => e.name === "sub/newdir/deeper.txt") &&
          events.some((e) => e.name === "sub/renamed.txt"),
      );
      await handle.stop();
      const names = events.map((e) => `${e.type}:${e.name}`);
      expect(names).toContain("create:top.txt");
      expect(names).toContain("create:sub/inner.txt");
      expect(names).toContain("create:sub/newdir");
      expect(names).toContain("remove:top.txt");
      expect(names).toContain("rename:sub/inner.txt");
      expect(names).toContain("create:sub/renamed.txt");
    });

    it("reports what is made inside a directory created after the watch started, at once", async () => {
      const base = `${dir}/watched-new`;
      await sbx.files.makeDir(base);
      const events: string[] = [];
      const handle = await sbx.files.watchDir(base, (e) => void events.push(`${e.type}:${e.name}`), {
        recursive: true,
      });
      // One command, no pause: the files exist before envd can watch the new directories.
      await sbx.commands.run(`mkdir -p ${base}/n1/n2 && echo hi > ${base}/n1/n2/f.txt && touch ${base}/n1/g.txt`, {
        user: "root",
      });
      await until(() => events.includes("create:n1/n2/f.txt") && events.includes("create:n1/g.txt"));
      await sbx.files.write(`${base}/n1/n2/later.txt`, "x");
      await until(() => events.includes("create:n1/n2/later.txt"));
      await handle.stop();
      expect(events).toContain("create:n1");
      expect(events).toContain("create:n1/n2");
    });
  });
});

/**
 * Talks to a real envd (debug mode, random loopback port, as root) directly: Connect in binary
 * protobuf over HTTP/1.1 and h2c, deadlines, keepalives, backpressure, the access token and
 * signed-URL rules with E2B's exact 401 bodies, and bad input that must not break anything.
 * Needs root: see envd-harness.ts.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventType, Filesystem } from "../../proto/gen/envd/filesystem/filesystem_pb.js";
import {
  Process,
  type ProcessEvent,
  Signal,
  StreamInputRequestSchema,
} from "../../proto/gen/envd/process/process_pb.js";
import {
  type EnvdProcess,
  ensureTestUser,
  isRoot,
  ROOT_REASON,
  sdkSandbox,
  startEnvdProcess,
  tempRoot,
} from "../helpers/envd-harness.js";

const TOKEN = "test-token-0123456789abcdef";
const UNAUTHORIZED = {
  code: 401,
  message: "unauthorized access, please provide a valid access token or method signing if supported",
};

describe.skipIf(!isRoot)(`envd protocol (${isRoot ? "root" : ROOT_REASON})`, () => {
  let envd: EnvdProcess;
  let removeUser: () => void;
  const tmp = tempRoot("proto");
  const dir = tmp.dir;
  const mounts: string[] = [];

  const transport = (httpVersion: "1.1" | "2", headers: Record<string, string> = {}) =>
    createConnectTransport({
      baseUrl: envd.url,
      httpVersion,
      useBinaryFormat: true,
      interceptors: [
        (next) => async (req) => {
          for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
          return next(req);
        },
      ],
    });
  const authed = { "X-Access-Token": TOKEN };

  beforeAll(async () => {
    removeUser = ensureTestUser();
    envd = await startEnvdProcess();
  });

  afterAll(async () => {
    await envd?.stop();
    for (const m of mounts) {
      try {
        execFileSync("umount", ["-l", m]);
      } catch {
        // already gone
      }
    }
    tmp.remove();
    removeUser?.();
  });

  describe("before /init (no token)", () => {
    for (const version of ["1.1", "2"] as const) {
      it(`Start streams start → data → end in binary protobuf over HTTP/${version}`, async () => {
        const proc = createClient(Process, transport(version));
        const events: ProcessEvent[] = [];
        for await (const res of proc.start({
          process: { cmd: "/bin/sh", args: ["-c", "echo out; echo err >&2; exit 4"] },
        })) {
          if (res.event) events.push(res.event);
        }
        expect(events[0]?.event.case).toBe("start");
        const last = events.at(-1)?.event;
        expect(last?.case).toBe("end");
        if (last?.case !== "end") throw new Error("no end");
        expect(last.value).toMatchObject({ exitCode: 4, exited: true, status: "exit status 4" });
        const text = (stream: "stdout" | "stderr") =>
          Buffer.concat(
            events.flatMap((e) =>
              e.event.case === "data" && e.event.value.output.case === stream ? [e.event.value.output.value] : [],
            ),
          ).toString();
        expect(text("stdout")).toBe("out\n");
        expect(text("stderr")).toBe("err\n");
      });
    }

    it("ends a stream at its deadline with deadline_exceeded, and the process lives on", async () => {
      const proc = createClient(Process, transport("1.1"));
      let pid = 0;
      const err = await (async () => {
        for await (const res of proc.start(
          { process: { cmd: "sleep", args: ["30"] }, tag: "deadline" },
          { timeoutMs: 600 },
        )) {
          if (res.event?.event.case === "start") pid = res.event.event.value.pid;
        }
      })().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code).toBe(Code.DeadlineExceeded);
      expect(pid).toBeGreaterThan(0);
      const listed = await proc.list({});
      expect(listed.processes.find((p) => p.pid === pid)?.tag).toBe("deadline");
      await proc.sendSignal({ process: { selector: { case: "tag", value: "deadline" } }, signal: Signal.SIGTERM });
      // A reconnect after the signal sees the end.
      const kinds: string[] = [];
      try {
        for await (const res of proc.connect({ process: { selector: { case: "pid", value: pid } } })) {
          kinds.push(res.event?.event.case ?? "");
        }
      } catch (e) {
        // The process may already be gone: NotFound is fine here.
        expect((e as ConnectError).code).toBe(Code.NotFound);
      }
      if (kinds.length > 0) expect(kinds.at(-1)).toBe("end");
      await expect.poll(async () => (await proc.list({})).processes.some((p) => p.pid === pid)).toBe(false);
    });

    it("sends keepalives at the client's Keepalive-Ping-Interval", async () => {
      const proc = createClient(Process, transport("1.1", { "Keepalive-Ping-Interval": "1" }));
      const kinds: string[] = [];
      for await (const res of proc.start({ process: { cmd: "sleep", args: ["3.5"] } }))
        kinds.push(res.event?.event.case ?? "");
      expect(kinds[0]).toBe("start");
      expect(kinds.filter((k) => k === "keepalive").length).toBeGreaterThanOrEqual(2);
      expect(kinds.at(-1)).toBe("end");
    });

    it("never drops output for a slow reader (the process waits instead)", async () => {
      const proc = createClient(Process, transport("2"));
      const total = 24 * 1024 * 1024;
      let received = 0;
      let first = true;
      for await (const res of proc.start({ process: { cmd: "head", args: ["-c", String(total), "/dev/urandom"] } })) {
        const e = res.event?.event;
        if (e?.case === "data") {
          if (first) {
            first = false;
            // Stall well past the point where the process has written far more than envd buffers.
            await new Promise((r) => setTimeout(r, 1_500));
          }
          received += e.value.output.value?.byteLength ?? 0;
        }
      }
      expect(received).toBe(total);
    });

    it("takes client-streamed input (StreamInput) over HTTP/2", async () => {
      const proc = createClient(Process, transport("2"));
      const stream = proc.start({ process: { cmd: "cat" }, stdin: true, tag: "streamin" });
      const it = stream[Symbol.asyncIterator]();
      const first = await it.next();
      expect(first.value?.event?.event.case).toBe("start");
      async function* input() {
        yield create(StreamInputRequestSchema, {
          event: { case: "start", value: { process: { selector: { case: "tag", value: "streamin" } } } },
        });
        for (const word of ["alpha\n", "beta\n"]) {
          yield create(StreamInputRequestSchema, {
            event: {
              case: "data",
              value: { input: { input: { case: "stdin", value: new TextEncoder().encode(word) } } },
            },
          });
        }
      }
      await proc.streamInput(input());
      await proc.closeStdin({ process: { selector: { case: "tag", value: "streamin" } } });
      let out = "";
      for (let r = await it.next(); !r.done; r = await it.next()) {
        const e = r.value.event?.event;
        if (e?.case === "data") out += Buffer.from(e.value.output.value ?? new Uint8Array()).toString();
      }
      expect(out).toBe("alpha\nbeta\n");
    });

    it("maps bad process requests to clear codes", async () => {
      const proc = createClient(Process, transport("1.1"));
      const code = async (p: Promise<unknown>) => ((await p.catch((e: unknown) => e)) as ConnectError).code;
      expect(
        await code(proc.sendSignal({ process: { selector: { case: "pid", value: 999_999 } }, signal: Signal.SIGKILL })),
      ).toBe(Code.NotFound);
      expect(await code(proc.sendInput({ process: { selector: { case: "tag", value: "nope" } } }))).toBe(Code.NotFound);
      expect(await code(proc.update({ process: {} }))).toBe(Code.InvalidArgument);
      const startErr = async (req: Parameters<typeof proc.start>[0], headers?: Record<string, string>) => {
        try {
          for await (const _ of proc.start(req, { headers })) {
            // drain
          }
          return undefined;
        } catch (e) {
          return e as ConnectError;
        }
      };
      expect((await startErr({ process: { cmd: "/no/such/binary" } }))?.code).toBe(Code.InvalidArgument);
      expect((await startErr({ process: { cmd: "true", cwd: "/no/such/dir" } }))?.code).toBe(Code.InvalidArgument);
      const unknownUser = await startErr(
        { process: { cmd: "true" } },
        { Authorization: `Basic ${Buffer.from("ghost-user-xyz:").toString("base64")}` },
      );
      expect(unknownUser?.code).toBe(Code.Unauthenticated);
      expect(unknownUser?.rawMessage).toMatch(/invalid username/);
    });

    it("maps bad filesystem requests to clear codes and polls a watcher", async () => {
      const fs = createClient(Filesystem, transport("1.1"));
      const code = async (p: Promise<unknown>) => ((await p.catch((e: unknown) => e)) as ConnectError).code;
      expect(await code(fs.stat({ path: `${dir}/missing` }))).toBe(Code.NotFound);
      expect(await code(fs.listDir({ path: `${dir}/missing` }))).toBe(Code.NotFound);
      writeFileSync(`${dir}/plain.txt`, "x");
      expect(await code(fs.listDir({ path: `${dir}/plain.txt` }))).toBe(Code.InvalidArgument);
      expect(await code(fs.makeDir({ path: `${dir}/plain.txt` }))).toBe(Code.AlreadyExists);
      expect(await code(fs.move({ source: `${dir}/missing`, destination: `${dir}/x` }))).toBe(Code.NotFound);
      expect(await code(fs.stat({ path: "~other/x" }))).toBe(Code.InvalidArgument);

      mkdirSync(`${dir}/polled`);
      const { watcherId } = await fs.createWatcher({ path: `${dir}/polled`, recursive: true });
      writeFileSync(`${dir}/polled/new.txt`, "1");
      await expect
        .poll(async () => (await fs.getWatcherEvents({ watcherId })).events.map((e) => [e.name, e.type]), {
          timeout: 5_000,
        })
        .toContainEqual(["new.txt", EventType.CREATE]);
      await fs.removeWatcher({ watcherId });
      expect(await code(fs.getWatcherEvents({ watcherId }))).toBe(Code.NotFound);
    });

    it("answers CORS preflights and serves /health, /metrics and /envs", async () => {
      const pre = await fetch(`${envd.url}/process.Process/Start`, {
        method: "OPTIONS",
        headers: {
          Origin: "http://example.test",
          "Access-Control-Request-Headers": "x-access-token,connect-protocol-version",
        },
      });
      expect(pre.status).toBe(204);
      expect(pre.headers.get("access-control-allow-origin")).toBe("*");
      const health = await fetch(`${envd.url}/health`);
      expect(health.status).toBe(204);
      expect(health.headers.get("x-envd-version")).toBe("0.6.13");
      const metrics = (await (await fetch(`${envd.url}/metrics`)).json()) as Record<string, number>;
      for (const key of [
        "ts",
        "cpu_count",
        "cpu_used_pct",
        "mem_total",
        "mem_used",
        "mem_cache",
        "mem_total_mib",
        "mem_used_mib",
        "disk_used",
        "disk_total",
      ]) {
        expect(typeof metrics[key], key).toBe("number");
      }
      expect(metrics.mem_total).toBeGreaterThan(0);
    });

    it("rejects bad /files requests with E2B's statuses and JSON", async () => {
      const get = (q: string) => fetch(`${envd.url}/files?${q}`);
      let r = await get(`path=${encodeURIComponent(dir)}`);
      expect(r.status).toBe(400);
      expect(await r.json()).toEqual({ code: 400, message: `path '${dir}' is a directory` });
      r = await get(`path=${encodeURIComponent(`${dir}/nope`)}`);
      expect(r.status).toBe(404);
      expect(await r.json()).toEqual({ code: 404, message: `path '${dir}/nope' does not exist` });
      r = await get(`path=x&username=ghost-user-xyz`);
      expect(r.status).toBe(401);
      r = await fetch(`${envd.url}/files?path=${dir}/a`, {
        method: "POST",
        headers: { "content-type": "text/plain" },
        body: "x",
      });
      expect(r.status).toBe(400);
      r = await fetch(`${envd.url}/files`, {
        method: "POST",
        headers: { "content-type": "application/octet-stream" },
        body: "x",
      });
      expect(r.status).toBe(400);
      expect(((await r.json()) as { message: string }).message).toBe(
        "path query parameter is required for raw body upload",
      );
    });

    it("serves a byte range", async () => {
      writeFileSync(`${dir}/range.txt`, "0123456789");
      const r = await fetch(`${envd.url}/files?path=${dir}/range.txt`, { headers: { Range: "bytes=2-5" } });
      expect(r.status).toBe(206);
      expect(r.headers.get("content-range")).toBe("bytes 2-5/10");
      expect(await r.text()).toBe("2345");
      const bad = await fetch(`${envd.url}/files?path=${dir}/range.txt`, { headers: { Range: "bytes=50-" } });
      expect(bad.status).toBe(416);
    });

    it("sends a multi-MiB file whole over HTTP/1.1 and h2c, and ranges across read buffers", async () => {
      const content = randomBytes(5 * 1024 * 1024 + 12_345);
      writeFileSync(`${dir}/big-download.bin`, content);
      const url = `${envd.url}/files?path=${dir}/big-download.bin`;
      const h1 = await fetch(url);
      expect(h1.headers.get("content-length")).toBe(String(content.length));
      expect(Buffer.from(await h1.arrayBuffer()).equals(content)).toBe(true);

      const session = http2.connect(envd.url);
      try {
        const viaH2 = await new Promise<Buffer>((resolve, reject) => {
          const req = session.request({ ":path": `/files?path=${dir}/big-download.bin` });
          const parts: Buffer[] = [];
          req.on("data", (d: Buffer) => parts.push(d));
          req.on("end", () => resolve(Buffer.concat(parts)));
          req.on("error", reject);
          req.end();
        });
        expect(viaH2.equals(content)).toBe(true);
      } finally {
        session.close();
      }

      // Starts just before the first 1 MiB read ends and stops inside the fourth read.
      const [from, to] = [1024 * 1024 - 7, 3 * 1024 * 1024 + 99];
      const ranged = await fetch(url, { headers: { Range: `bytes=${from}-${to}` } });
      expect(ranged.status).toBe(206);
      expect(Buffer.from(await ranged.arrayBuffer()).equals(content.subarray(from, to + 1))).toBe(true);

      const head = await fetch(url, { method: "HEAD" });
      expect(head.status).toBe(200);
      expect(head.headers.get("content-length")).toBe(String(content.length));
    });

    it("gets over a client that leaves in the middle of a download", async () => {
      writeFileSync(`${dir}/left.bin`, Buffer.alloc(64 * 1024 * 1024, 3));
      await new Promise<void>((resolve, reject) => {
        const req = http.get(`${envd.url}/files?path=${dir}/left.bin`, (res) => {
          res.once("data", () => {
            req.destroy();
            resolve();
          });
        });
        req.on("error", (err) => (req.destroyed ? resolve() : reject(err)));
      });
      await new Promise((r) => setTimeout(r, 200));
      expect((await fetch(`${envd.url}/health`)).status).toBe(204);
      const again = await fetch(`${envd.url}/files?path=${dir}/left.bin`);
      expect((await again.arrayBuffer()).byteLength).toBe(64 * 1024 * 1024);
    });

    it("answers 507 when the disk is full and leaves no partial file", async () => {
      const small = `${dir}/small-disk`;
      mkdirSync(small);
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", small]);
      mounts.push(small);
      const body = Buffer.alloc(3 * 1024 * 1024, 7);
      const raw = await fetch(`${envd.url}/files?path=${small}/big.bin`, {
        method: "POST",
        headers: { "content-type": "application/octet-stream" },
        body,
      });
      expect(raw.status).toBe(507);
      expect(await raw.json()).toEqual({ code: 507, message: "not enough disk space available" });
      const form = new FormData();
      form.append("file", new Blob([body]), `${small}/multi.bin`);
      const multi = await fetch(`${envd.url}/files`, { method: "POST", body: form });
      expect(multi.status).toBe(507);
      expect(readdirSync(small)).toEqual([]);
      // The failure cost nothing: a small upload to the same place still works.
      const ok = await fetch(`${envd.url}/files?path=${small}/ok.txt`, {
        method: "POST",
        headers: { "content-type": "application/octet-stream" },
        body: "fits",
      });
      expect(ok.status).toBe(200);
    });

    it("leaves no partial file when the client aborts an upload, and an old file survives", async () => {
      writeFileSync(`${dir}/keep.txt`, "original");
      for (const target of [`${dir}/aborted.bin`, `${dir}/keep.txt`]) {
        await new Promise<void>((resolve) => {
          const req = http.request(`${envd.url}/files?path=${encodeURIComponent(target)}`, {
            method: "POST",
            headers: { "content-type": "application/octet-stream", "content-length": String(10 * 1024 * 1024) },
          });
          req.on("error", () => resolve());
          req.write(Buffer.alloc(1024 * 1024, 1), () => {
            setTimeout(() => {
              req.destroy();
              resolve();
            }, 300);
          });
        });
      }
      await new Promise((r) => setTimeout(r, 500));
      expect(existsSync(`${dir}/aborted.bin`)).toBe(false);
      expect(readdirSync(dir).filter((n) => n.includes("wrenn-upload"))).toEqual([]);
      expect(execFileSync("cat", [`${dir}/keep.txt`]).toString()).toBe("original");
      expect((await fetch(`${envd.url}/health`)).status).toBe(204);
    });

    it("survives garbage on the wire", async () => {
      const r = await fetch(`${envd.url}/process.Process/List`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{not json",
      });
      expect(r.status).toBeGreaterThanOrEqual(400);
      const bad = await fetch(`${envd.url}/init`, { method: "POST", body: "[1,2" });
      expect(bad.status).toBe(400);
      await new Promise<void>((resolve) => {
        const s = net.connect(envd.port, "127.0.0.1", () => {
          s.end("\x00\x01garbage\r\n\r\n");
        });
        // Read the 400 reply and the close; an unread socket would never see the server's FIN.
        s.resume();
        s.on("close", () => resolve());
        s.on("error", () => resolve());
      });
      expect((await fetch(`${envd.url}/health`)).status).toBe(204);
    });
  });

  describe("after /init with an access token", () => {
    beforeAll(async () => {
      const r = await fetch(`${envd.url}/init`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          accessToken: TOKEN,
          envVars: { FROM_INIT: "yes" },
          defaultUser: "user",
          timestamp: new Date().toISOString(),
        }),
      });
      expect(r.status).toBe(204);
      expect(r.headers.get("x-envd-version")).toBe("0.6.13");
    });

    it("rejects requests without the token with E2B's exact 401 body, keeps /health open", async () => {
      const r = await fetch(`${envd.url}/process.Process/List`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{}",
      });
      expect(r.status).toBe(401);
      expect(await r.json()).toEqual(UNAUTHORIZED);
      expect((await fetch(`${envd.url}/envs`)).status).toBe(401);
      expect((await fetch(`${envd.url}/health`)).status).toBe(204);
      const envs = await fetch(`${envd.url}/envs`, { headers: authed });
      expect(await envs.json()).toEqual({ FROM_INIT: "yes" });
      const list = await createClient(Process, transport("1.1", authed)).list({});
      expect(Array.isArray(list.processes)).toBe(true);
    });

    it("gives processes the /init env vars", async () => {
      const sbx = sdkSandbox(envd, { accessToken: TOKEN });
      const r = await sbx.commands.run("echo $FROM_INIT");
      expect(r.stdout).toBe("yes\n");
    });

    it("guards re-init with the token and ignores stale timestamps", async () => {
      const init = (body: object, headers: Record<string, string> = {}) =>
        fetch(`${envd.url}/init`, {
          method: "POST",
          headers: { "content-type": "application/json", ...headers },
          body: JSON.stringify(body),
        });
      const denied = await init({ accessToken: "attacker", timestamp: new Date().toISOString() });
      expect(denied.status).toBe(401);
      const stale = await init({ envVars: { FROM_INIT: "stale" }, timestamp: "2000-01-01T00:00:00Z" }, authed);
      expect(stale.status).toBe(204);
      expect(await (await fetch(`${envd.url}/envs`, { headers: authed })).json()).toEqual({ FROM_INIT: "yes" });
      const bad = await init({ timestamp: "not a time" }, authed);
      expect(bad.status).toBe(400);
      const unknownUser = await init({ defaultUser: "ghost-user-xyz" }, authed);
      expect(unknownUser.status).toBe(400);
    });

    it("signs upload and download URLs exactly as the SDK does", async () => {
      const sbx = sdkSandbox(envd, { accessToken: TOKEN });
      const path = `${dir}/signed.txt`;
      const uploadUrl = await sbx.uploadUrl(path);
      expect(uploadUrl).toMatch(/signature=v1_/);
      const form = new FormData();
      form.append("file", new Blob(["signed content"]), "ignored-name.txt");
      const up = await fetch(uploadUrl, { method: "POST", body: form });
      expect(up.status).toBe(200);
      const downloadUrl = await sbx.downloadUrl(path, { useSignatureExpiration: 60 });
      expect(downloadUrl).toMatch(/signature_expiration=\d+/);
      const down = await fetch(downloadUrl);
      expect(down.status).toBe(200);
      expect(await down.text()).toBe("signed content");

      // A signature for one path does not open another, and a read signature does not allow writing.
      const other = new URL(downloadUrl);
      other.searchParams.set("path", `${dir}/range.txt`);
      const wrong = await fetch(other);
      expect(wrong.status).toBe(401);
      expect(await wrong.json()).toEqual({ code: 401, message: "invalid signature" });
      const writeWithRead = await fetch(downloadUrl, { method: "POST", body: form });
      expect(writeWithRead.status).toBe(401);

      const expired = await sbx.downloadUrl(path, { useSignatureExpiration: -5 });
      const gone = await fetch(expired);
      expect(gone.status).toBe(401);
      expect(await gone.json()).toEqual({ code: 401, message: "signature is already expired" });

      const bare = await fetch(`${envd.url}/files?path=${encodeURIComponent(path)}`);
      expect(bare.status).toBe(401);
      expect(await bare.json()).toEqual({ code: 401, message: "missing signature query parameter" });
      const badHeader = await fetch(`${envd.url}/files?path=${encodeURIComponent(path)}`, {
        headers: { "X-Access-Token": "wrong" },
      });
      expect(await badHeader.json()).toEqual({
        code: 401,
        message: "access token present in header but does not match",
      });
      const withHeader = await fetch(`${envd.url}/files?path=${encodeURIComponent(path)}`, { headers: authed });
      expect(await withHeader.text()).toBe("signed content");
    });

    it("lets the SDK work with the token as a created sandbox does", async () => {
      const sbx = sdkSandbox(envd, { accessToken: TOKEN });
      await sbx.files.write(`${dir}/tok.txt`, "ok");
      expect(await sbx.files.read(`${dir}/tok.txt`)).toBe("ok");
      expect((await sbx.commands.run("id -un")).stdout).toBe("user\n");
      const noToken = sdkSandbox(envd);
      await expect(noToken.files.list(dir)).rejects.toThrow();
    });
  });
});

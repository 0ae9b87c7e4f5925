import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { CommandExitError, FilesystemEventType, Sandbox, SandboxNotFoundError } from "e2b";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import type { NodeEdge } from "../../edge/node.js";
import { SandboxState } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { IMAGES_ROOT, requireImage, requireRoot } from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";
import { newTeamKey, pointE2bSdkAt, sdkTestLogger, startEdgeForAgent } from "../helpers/edge-stack.js";
import { selfSignedCert } from "../helpers/tls.js";

/**
 * Acceptance for issue 10: the official `e2b` SDK (2.51.0), pointed at Wrenn with E2B_API_URL and
 * E2B_SANDBOX_URL, against the real stack — the edge on Node with PGlite, a real host agent
 * (namespace runtime; needs root for netns, mounts and cgroups, which CI has) and the real guest
 * image with Wrenn's envd. API and sandbox proxy share the edge's one port.
 */

const adminKey = `wrn_e2b_admin_${randomBytes(16).toString("hex")}`;

let agent: AgentProcess | undefined;
let edge: NodeEdge | undefined;
let restoreEnv: (() => void) | undefined;

function edgeUrl(): string {
  if (!edge) throw new Error("edge not started");
  return edge.url;
}

/** A raw HTTP request to the edge with any Host header (fetch may not override Host). */
function rawRequest(
  path: string,
  headers: Record<string, string>,
  method = "GET",
): Promise<{ status: number; body: string }> {
  const url = new URL(edgeUrl());
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, path, method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

const viaProxy = (sandboxId: string, port: number, path: string, init: RequestInit = {}) =>
  fetch(`${edgeUrl()}${path}`, {
    ...init,
    headers: { "E2b-Sandbox-Id": sandboxId, "E2b-Sandbox-Port": String(port), ...(init.headers ?? {}) },
  });

async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
}

beforeAll(async () => {
  requireRoot();
  await requireImage();
  // A fast TTL reaper, so the timeout → auto-pause → auto-resume test needs seconds, not minutes.
  agent = await startAgentProcess({
    runtime: "namespace",
    rootDir: IMAGES_ROOT,
    env: { AGENT_REAP_INTERVAL_MS: "500" },
  });
  edge = await startEdgeForAgent(agent, {
    adminKey,
    env: { WRENN_RECONCILE_INTERVAL_SEC: "0" },
    logger: sdkTestLogger(),
  });
  const secret = await newTeamKey(edge, adminKey, "e2b-sdk", `e2b-sdk-${randomBytes(3).toString("hex")}`);
  // Exactly what a user sets: two URLs and a key. The SDK reads them when each call starts.
  restoreEnv = pointE2bSdkAt(edge, secret);
}, 120_000);

afterAll(async () => {
  restoreEnv?.();
  await edge?.close().catch(() => {});
  await agent?.stop().catch(() => {});
}, 120_000);

describe("the official e2b SDK against Wrenn", () => {
  let sbx: Sandbox;

  beforeAll(async () => {
    sbx = await Sandbox.create({ timeoutMs: 300_000, metadata: { suite: "e2b-sdk" }, envs: { FROM_CREATE: "yes" } });
  }, 120_000);

  afterAll(async () => {
    await sbx?.kill().catch(() => {});
  });

  it("creates a sandbox with a 20-character id and reports it running", async () => {
    expect(sbx.sandboxId).toMatch(/^[a-z0-9]{20}$/);
    expect(await sbx.isRunning()).toBe(true);
    const info = await sbx.getInfo();
    expect(info.state).toBe("running");
    expect(info.metadata).toEqual({ suite: "e2b-sdk" });
    const [major = 0, minor = 0, patch = 0] = info.envdVersion.split(".").map(Number);
    expect(major * 1e6 + minor * 1e3 + patch).toBeGreaterThanOrEqual(6004);
  });

  it("runs foreground commands with env, cwd and exit codes", async () => {
    const result = await sbx.commands.run('echo "out:$GREETING" && echo err >&2 && pwd && whoami', {
      envs: { GREETING: "hi" },
      cwd: "/tmp",
    });
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toBe("out:hi\n/tmp\nuser\n");
    expect(result.stderr).toBe("err\n");
    const failed = await sbx.commands.run("exit 3").catch((err: unknown) => err);
    expect(failed).toBeInstanceOf(CommandExitError);
    expect((failed as CommandExitError).exitCode).toBe(3);
    expect((await sbx.commands.run("echo $FROM_CREATE")).stdout).toBe("yes\n");
    const root = await sbx.commands.run("id -u", { user: "root" });
    expect(root.stdout.trim()).toBe("0");
  });

  it("runs background commands, streams their output, connects to them and kills them", async () => {
    const seen: string[] = [];
    const ticker = await sbx.commands.run("for i in 1 2 3; do echo tick$i; sleep 0.3; done", {
      background: true,
      onStdout: (data) => {
        seen.push(data);
      },
    });
    const done = await ticker.wait();
    expect(done.exitCode).toBe(0);
    expect(seen.join("")).toBe("tick1\ntick2\ntick3\n");

    const sleeper = await sbx.commands.run("sleep 600", { background: true });
    const listed = await sbx.commands.list();
    expect(listed.map((p) => p.pid)).toContain(sleeper.pid);
    const attached = await sbx.commands.connect(sleeper.pid);
    expect(await sbx.commands.kill(sleeper.pid)).toBe(true);
    const ended = await attached.wait().catch((err: unknown) => err);
    expect(ended).toBeInstanceOf(CommandExitError);
    expect(await sbx.commands.kill(sleeper.pid)).toBe(false);
  });

  it("writes, reads, lists, renames and removes files", async () => {
    const info = await sbx.files.write("notes/hello.txt", "hello from e2b");
    expect(info.path).toBe("/home/user/notes/hello.txt");
    expect(await sbx.files.read("notes/hello.txt")).toBe("hello from e2b");
    const bytes = new Uint8Array(256 * 1024).map((_, i) => (i * 7) % 256);
    await sbx.files.write("/home/user/notes/blob.bin", bytes.buffer);
    const back = await sbx.files.read("/home/user/notes/blob.bin", { format: "bytes" });
    expect(Buffer.from(back).equals(Buffer.from(bytes))).toBe(true);
    const entries = await sbx.files.list("/home/user/notes");
    expect(entries.map((e) => e.name).sort()).toEqual(["blob.bin", "hello.txt"]);
    expect(await sbx.files.exists("/home/user/notes/hello.txt")).toBe(true);
    expect(await sbx.files.makeDir("/home/user/notes/sub")).toBe(true);
    expect(await sbx.files.makeDir("/home/user/notes/sub")).toBe(false);
    await sbx.files.rename("/home/user/notes/hello.txt", "/home/user/notes/sub/moved.txt");
    expect(await sbx.files.read("/home/user/notes/sub/moved.txt")).toBe("hello from e2b");
    await sbx.files.remove("/home/user/notes/blob.bin");
    expect(await sbx.files.exists("/home/user/notes/blob.bin")).toBe(false);
  });

  it("watches a directory", async () => {
    await sbx.files.makeDir("/home/user/watched");
    const events: Array<{ name: string; type: FilesystemEventType }> = [];
    const watcher = await sbx.files.watchDir("/home/user/watched", (event) => {
      events.push({ name: event.name, type: event.type });
    });
    try {
      await sbx.files.write("/home/user/watched/new.txt", "x");
      await eventually("a create or write event", async () =>
        events.some(
          (e) =>
            e.name === "new.txt" && (e.type === FilesystemEventType.CREATE || e.type === FilesystemEventType.WRITE),
        )
          ? true
          : undefined,
      );
    } finally {
      await watcher.stop();
    }
  });

  it("uploads and downloads through signed URLs that carry no routing headers", async () => {
    const uploadUrl = await sbx.uploadUrl("/home/user/signed/up.txt");
    expect(new URL(uploadUrl).origin).toBe(new URL(edgeUrl()).origin);
    const form = new FormData();
    form.append("file", new Blob(["uploaded via signed url"]), "up.txt");
    const up = await fetch(uploadUrl, { method: "POST", body: form });
    expect(up.status, await up.clone().text()).toBe(200);
    expect(await sbx.files.read("/home/user/signed/up.txt")).toBe("uploaded via signed url");

    const down = await fetch(await sbx.downloadUrl("/home/user/signed/up.txt"));
    expect(down.status).toBe(200);
    expect(await down.text()).toBe("uploaded via signed url");

    const expired = await fetch(await sbx.downloadUrl("/home/user/signed/up.txt", { useSignatureExpiration: -30 }));
    expect(expired.status).toBe(401);
    expect(await expired.json()).toEqual({ code: 401, message: "signature is already expired" });
  });

  it("writes a signed upload whose file part has no filename (FormData with a string) and answers the entry", async () => {
    for (const [user, home] of [
      [undefined, "/home/user"],
      ["root", "/root"],
    ] as const) {
      const name = `nameless-${user ?? "default"}.txt`;
      const url = await sbx.uploadUrl(name, user ? { user } : undefined);
      const form = new FormData();
      form.append("file", `text part for ${user ?? "user"}`);
      const up = await fetch(url, { method: "POST", body: form });
      expect(up.status, await up.clone().text()).toBe(200);
      expect(await up.json()).toEqual([{ path: `${home}/${name}`, name, type: "file" }]);
      expect(await sbx.files.read(`${home}/${name}`, { user: "root" })).toBe(`text part for ${user ?? "user"}`);
    }
  });

  it("opens a PTY, types into it and reads the echo", async () => {
    let output = "";
    const decoder = new TextDecoder();
    const pty = await sbx.pty.create({
      cols: 100,
      rows: 30,
      onData: (data) => {
        output += decoder.decode(data, { stream: true });
      },
    });
    await sbx.pty.sendInput(pty.pid, new TextEncoder().encode("echo pty-$((6*7)) && tty\n"));
    await eventually("the PTY's answer", async () =>
      output.includes("pty-42") && /\/dev\/pts\/\d+/.test(output) ? true : undefined,
    );
    await sbx.pty.resize(pty.pid, { cols: 120, rows: 40 });
    await pty.kill();
  });

  it("lists, sets the timeout and reads metrics", async () => {
    const page = await Sandbox.list({ query: { metadata: { suite: "e2b-sdk" } } }).nextItems();
    expect(page.map((s) => s.sandboxId)).toContain(sbx.sandboxId);
    const before = Date.now();
    await sbx.setTimeout(90_000);
    const info = await sbx.getInfo();
    expect((info.endAt.getTime() - before) / 1000).toBeGreaterThan(80);
    expect((info.endAt.getTime() - before) / 1000).toBeLessThan(100);
    // Samples since the sandbox started, one every AGENT_METRICS_INTERVAL_MS (5 s here): wait for the first.
    await expect
      .poll(async () => (await sbx.getMetrics()).length, { timeout: 15_000, interval: 500 })
      .toBeGreaterThan(0);
    const metrics = await sbx.getMetrics();
    expect(metrics[0]?.memTotal).toBeGreaterThan(0);
    // The sandbox's own memory, not the host's (a namespace guest reads the host's /proc/meminfo; the
    // agent takes the figures from the sandbox's cgroup instead).
    expect(metrics[0]?.memTotal).toBeLessThanOrEqual(Math.max(info.memoryMB * 2 ** 20 * 2, 2 ** 31));
    expect(metrics[0]?.memTotal).toBeLessThan(totalmem());
    expect(metrics[0]?.memUsed).toBeLessThanOrEqual(metrics[0]?.memTotal ?? 0);
    expect(metrics[0]?.cpuCount).toBeGreaterThan(0);
  });

  it("refuses envd's internal routes through the proxy", async () => {
    const res = await viaProxy(sbx.sandboxId, 49983, "/init", {
      method: "POST",
      headers: { "content-type": "application/json", "X-Access-Token": "x" },
      body: JSON.stringify({ accessToken: "stolen" }),
    });
    expect(res.status).toBe(404);
    expect(await sbx.files.exists("/home/user")).toBe(true);
  });

  it("keeps raw dot segments inside the sandbox: no reaching the agent's own routes or envd's /init", async () => {
    const routing = { "E2b-Sandbox-Id": sbx.sandboxId, "E2b-Sandbox-Port": "49983" };
    for (const path of ["/files/../init", "/x/%2e%2e/init", "/files/..%2finit", "/x\\..\\init"]) {
      const res = await rawRequest(path, routing, "POST");
      expect(res.status, path).not.toBe(204);
    }
    for (const path of ["/../../../metrics", "/%2e%2e/%2e%2e/%2e%2e/metrics", "/..\\..\\..\\metrics"]) {
      const res = await rawRequest(path, routing);
      // The agent's Prometheus text would start with "# HELP"; envd answers its own /metrics as JSON.
      expect(res.body, path).not.toContain("# HELP");
    }
    const rpc = "/../../../hostagent.v1.HostAgentService/ListSandboxes";
    const viaHeaders = await rawRequest(rpc, { ...routing, "content-type": "application/json" }, "POST");
    expect(viaHeaders.body).not.toContain(sbx.sandboxId);
    for (const domain of ["localhost", "127.0.0.1"]) {
      const host = `49983-${sbx.sandboxId}.${domain}:${new URL(edgeUrl()).port}`;
      const viaHost = await rawRequest(rpc, { host, "content-type": "application/json" }, "POST");
      expect(viaHost.body).not.toContain(sbx.sandboxId);
      expect((await rawRequest("/../../../metrics", { host })).body).not.toContain("# HELP");
      // Refused by the proxy (404), or (a host under an IP) already by Node's URL parsing (400).
      expect([400, 404]).toContain((await rawRequest("/files/../init", { host }, "POST")).status);
    }
    expect(await sbx.isRunning()).toBe(true);
  });
});

describe("port forwarding through the proxy", () => {
  let sbx: Sandbox;

  beforeAll(async () => {
    sbx = await Sandbox.create({ timeoutMs: 300_000 });
  }, 120_000);

  afterAll(async () => {
    await sbx?.kill().catch(() => {});
  });

  it("reaches a server listening on the guest's 127.0.0.1:8000 by headers and by getHost()", async () => {
    await sbx.files.write("/home/user/www/index.html", "served from 127.0.0.1:8000");
    await sbx.commands.run("python3 -m http.server 8000 --bind 127.0.0.1 --directory /home/user/www", {
      background: true,
    });
    const body = await eventually("the forwarded port", async () => {
      const res = await viaProxy(sbx.sandboxId, 8000, "/index.html");
      return res.status === 200 ? res.text() : undefined;
    });
    expect(body).toBe("served from 127.0.0.1:8000");

    const host = sbx.getHost(8000);
    expect(host).toMatch(new RegExp(`^8000-${sbx.sandboxId}\\.`));
    const byHost = await rawRequest("/index.html", { host });
    expect(byHost).toEqual({ status: 200, body: "served from 127.0.0.1:8000" });
  });

  it("gives the guest's server the Host of network.maskRequestHost with the port filled in, by headers and by host", async () => {
    // biome-ignore lint/suspicious/noTemplateCurlyInString: E2B's own placeholder, replaced by the proxy.
    const mask = "localhost:${PORT}";
    const masked = await Sandbox.create({ timeoutMs: 120_000, network: { maskRequestHost: mask } });
    try {
      expect((await masked.getInfo()).network?.maskRequestHost).toBe(mask);
      const server = [
        "import http.server",
        "class H(http.server.BaseHTTPRequestHandler):",
        "    def do_GET(self):",
        "        body = (self.headers.get('Host') or '').encode()",
        "        self.send_response(200); self.send_header('content-length', str(len(body))); self.end_headers()",
        "        self.wfile.write(body)",
        "http.server.HTTPServer(('127.0.0.1', 8001), H).serve_forever()",
      ].join("\n");
      await masked.files.write("/home/user/echo_host.py", server);
      await masked.commands.run("python3 /home/user/echo_host.py", { background: true });
      const seen = await eventually("the echo server", async () => {
        const res = await viaProxy(masked.sandboxId, 8001, "/");
        return res.status === 200 ? res.text() : undefined;
      });
      expect(seen).toBe("localhost:8001");
      // A client cannot pick the Host itself with the agent's header.
      const forged = await rawRequest("/", { host: masked.getHost(8001), "wrenn-guest-host": "evil.example" });
      expect(forged).toEqual({ status: 200, body: "localhost:8001" });
      // Without a mask the guest sees its own address and port.
      await sbx.files.write("/home/user/echo_host.py", server);
      await sbx.commands.run("python3 /home/user/echo_host.py", { background: true });
      const plain = await eventually("the unmasked echo server", async () => {
        const res = await viaProxy(sbx.sandboxId, 8001, "/");
        return res.status === 200 ? res.text() : undefined;
      });
      expect(plain).toMatch(/^[0-9.]+:8001$/);
    } finally {
      await masked.kill().catch(() => {});
    }
  });

  it("speaks TLS to the ports in network.httpsPorts (not verifying the guest's certificate), plain HTTP to the others", async () => {
    const tlsDir = mkdtempSync(join(tmpdir(), "wrenn-https-ports-"));
    const tlsSandbox = await Sandbox.create({ timeoutMs: 120_000, network: { httpsPorts: [8443] } });
    try {
      expect((await tlsSandbox.getInfo()).network?.httpsPorts).toEqual([8443]);
      const { cert, key } = selfSignedCert(tlsDir, "guest", "DNS:guest.internal");
      await tlsSandbox.files.write("/home/user/tls/cert.pem", cert);
      await tlsSandbox.files.write("/home/user/tls/key.pem", key);
      await tlsSandbox.files.write("/home/user/tls/www/index.html", "served by a TLS server in the guest");
      const server = [
        "import functools, http.server, ssl",
        "handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory='/home/user/tls/www')",
        "context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)",
        "context.load_cert_chain('/home/user/tls/cert.pem', '/home/user/tls/key.pem')",
        "for port in (8443, 8444):",
        "    import threading",
        "    httpd = http.server.ThreadingHTTPServer(('0.0.0.0', port), handler)",
        "    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)",
        "    threading.Thread(target=httpd.serve_forever).start()",
      ].join("\n");
      await tlsSandbox.files.write("/home/user/tls/serve.py", server);
      await tlsSandbox.commands.run("python3 /home/user/tls/serve.py", { background: true });
      const page = await eventually("the guest's TLS server through the proxy", async () => {
        const res = await viaProxy(tlsSandbox.sandboxId, 8443, "/index.html");
        return res.status === 200 ? res.text() : undefined;
      });
      expect(page).toBe("served by a TLS server in the guest");
      const byHost = await rawRequest("/index.html", { host: tlsSandbox.getHost(8443) });
      expect(byHost).toEqual({ status: 200, body: "served by a TLS server in the guest" });
      // 8444 is not listed: the proxy speaks plain HTTP to it, which a TLS server does not answer.
      const plain = await viaProxy(tlsSandbox.sandboxId, 8444, "/index.html");
      expect(plain.status).toBe(502);
      await plain.body?.cancel();
    } finally {
      await tlsSandbox.kill().catch(() => {});
      rmSync(tlsDir, { recursive: true, force: true });
    }
  });

  it("answers a closed port with 502 'port is not open'", async () => {
    const res = await viaProxy(sbx.sandboxId, 8999, "/");
    expect(res.status).toBe(502);
    // E2B's fields, plus the API's error shape under `error`.
    expect(await res.json()).toMatchObject({
      sandboxId: sbx.sandboxId,
      message: "The sandbox is running but port is not open",
      port: 8999,
      code: 502,
      error: { code: "SANDBOX_PORT_NOT_OPEN" },
    });
  });

  it("streams a large upload and download through the proxy without corrupting it", async () => {
    const size = 64 * 1024 * 1024;
    const data = randomBytes(size);
    await sbx.files.write("/home/user/big.bin", new Blob([data]));
    const check = await sbx.commands.run("sha256sum /home/user/big.bin | cut -d' ' -f1");
    const { createHash } = await import("node:crypto");
    expect(check.stdout.trim()).toBe(createHash("sha256").update(data).digest("hex"));
    const back = await sbx.files.read("/home/user/big.bin", { format: "stream" });
    const hash = createHash("sha256");
    let total = 0;
    for await (const chunk of back) {
      hash.update(chunk);
      total += chunk.length;
    }
    expect(total).toBe(size);
    expect(hash.digest("hex")).toBe(createHash("sha256").update(data).digest("hex"));
  }, 120_000);

  it("proxies WebSockets to a guest port", async () => {
    // A minimal RFC 6455 echo server (handshake + unmasked text frames), so the guest needs only python3.
    const server = [
      "import socket, hashlib, base64",
      "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)",
      "s.bind(('127.0.0.1', 8765)); s.listen(4)",
      "while True:",
      "    c, _ = s.accept(); req = b''",
      "    while b'\\r\\n\\r\\n' not in req: req += c.recv(4096)",
      "    key = [l.split(b':', 1)[1].strip() for l in req.split(b'\\r\\n') if l.lower().startswith(b'sec-websocket-key')][0]",
      "    acc = base64.b64encode(hashlib.sha1(key + b'258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest())",
      "    c.sendall(b'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Accept: ' + acc + b'\\r\\n\\r\\n')",
      "    h = c.recv(2); n = h[1] & 127; mask = c.recv(4); data = bytearray(c.recv(n))",
      "    for i in range(n): data[i] ^= mask[i % 4]",
      "    reply = b'echo:' + bytes(data)",
      "    c.sendall(bytes([0x81, len(reply)]) + reply); c.close()",
    ].join("\n");
    await sbx.files.write("/home/user/ws.py", server);
    await sbx.commands.run("python3 /home/user/ws.py", { background: true });
    const url = new URL(edgeUrl());
    const reply = await eventually("the WebSocket echo", async () => {
      const ws = new WebSocket(`ws://${url.host}/chat`, {
        headers: { "E2b-Sandbox-Id": sbx.sandboxId, "E2b-Sandbox-Port": "8765" },
      });
      return await new Promise<string | undefined>((resolve) => {
        ws.once("open", () => ws.send("ping"));
        ws.once("message", (data) => {
          resolve(data.toString());
          ws.close();
        });
        ws.once("error", () => resolve(undefined));
        ws.once("unexpected-response", () => resolve(undefined));
      });
    });
    expect(reply).toBe("echo:ping");
  });
});

describe("pause, resume and kill", () => {
  it("pauses (502 through the proxy), resumes with files and processes intact, then kills", async () => {
    const sbx = await Sandbox.create({ timeoutMs: 300_000 });
    try {
      await sbx.files.write("/home/user/state.txt", "kept across pause");
      const sleeper = await sbx.commands.run("sleep 900", { background: true });

      expect(await sbx.pause()).toBe(true);
      expect(await Sandbox.pause(sbx.sandboxId)).toBe(false);
      expect(await sbx.isRunning()).toBe(false);
      const proxied = await viaProxy(sbx.sandboxId, 49983, "/health");
      expect(proxied.status).toBe(502);
      expect(await proxied.json()).toMatchObject({
        sandboxId: sbx.sandboxId,
        message: "The sandbox was not found",
        code: 502,
        error: { code: "SANDBOX_NOT_FOUND" },
      });
      const listed = await Sandbox.list({ query: { state: ["paused"] } }).nextItems();
      expect(listed.find((s) => s.sandboxId === sbx.sandboxId)?.state).toBe("paused");

      const resumed = await Sandbox.connect(sbx.sandboxId);
      expect(await resumed.isRunning()).toBe(true);
      expect(await resumed.files.read("/home/user/state.txt")).toBe("kept across pause");
      expect((await resumed.commands.list()).map((p) => p.pid)).toContain(sleeper.pid);
      expect((await resumed.getInfo()).state).toBe("running");
      // Connecting to a running sandbox just answers.
      const again = await sbx.connect();
      expect(await again.isRunning()).toBe(true);

      expect(await resumed.kill()).toBe(true);
      expect(await Sandbox.kill(sbx.sandboxId)).toBe(false);
      expect(await sbx.isRunning()).toBe(false);
      await expect(Sandbox.getInfo(sbx.sandboxId)).rejects.toBeInstanceOf(SandboxNotFoundError);
    } finally {
      await Sandbox.kill(sbx.sandboxId).catch(() => {});
    }
  }, 180_000);

  it("kills a paused sandbox", async () => {
    const sbx = await Sandbox.create({ timeoutMs: 300_000 });
    try {
      expect(await sbx.pause()).toBe(true);
      expect(await sbx.kill()).toBe(true);
      const all = await Sandbox.list().nextItems();
      expect(all.map((s) => s.sandboxId)).not.toContain(sbx.sandboxId);
      const onHost = await agent?.client.listSandboxes({});
      expect(onHost?.sandboxes.map((s) => s.sandboxId)).not.toContain(sbx.sandboxId);
    } finally {
      await Sandbox.kill(sbx.sandboxId).catch(() => {});
    }
  }, 120_000);

  it("auto-pauses at the timeout and resumes on traffic, before any reconcile sweep", async () => {
    // Reconcile is off in this stack: only the host knows the sandbox paused itself.
    const sbx = await Sandbox.create({ timeoutMs: 2_000, lifecycle: { onTimeout: "pause", autoResume: true } });
    try {
      await sbx.files.write("/home/user/ttl.txt", "survives the timeout");
      await eventually(
        "the host's reaper to pause it",
        async () => {
          const res = await agent?.client.getSandbox({ sandboxId: sbx.sandboxId });
          return res?.sandbox?.state === SandboxState.PAUSED ? true : undefined;
        },
        30_000,
      );
      expect(await sbx.files.read("/home/user/ttl.txt")).toBe("survives the timeout");
      expect((await sbx.getInfo()).state).toBe("running");
    } finally {
      await sbx.kill().catch(() => {});
    }
  }, 120_000);

  it("resumes an auto-resume sandbox when traffic reaches it", async () => {
    const sbx = await Sandbox.create({ timeoutMs: 300_000, lifecycle: { onTimeout: "pause", autoResume: true } });
    try {
      await sbx.files.write("/home/user/auto.txt", "auto");
      expect(await sbx.pause()).toBe(true);
      // Any SDK call is traffic: it goes through the proxy, which resumes the sandbox first.
      expect(await sbx.files.read("/home/user/auto.txt")).toBe("auto");
      expect((await sbx.getInfo()).state).toBe("running");
    } finally {
      await sbx.kill().catch(() => {});
    }
  }, 180_000);
});

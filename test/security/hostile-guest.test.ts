import { randomBytes } from "node:crypto";
import { request as httpRequest } from "node:http";
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { NodeEdge } from "../../edge/node.js";
import { IMAGES_ROOT, requireImage, requireRoot, TEMPLATE } from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";
import { newTeamKey, startEdgeForAgent } from "../helpers/edge-stack.js";

/**
 * A hostile guest behind the whole proxy path: edge (Node) → real host agent → a namespace sandbox
 * whose server answers statuses no HTTP client accepts, bytes that are not HTTP, and bodies cut off
 * halfway. Every way in (E2B headers, `<port>-<id>.<domain>` Host, WebSocket upgrade) must answer
 * 502 in the error shape, and the edge and the agent must keep answering afterwards.
 */

const adminKey = `wrn_it_admin_${randomBytes(16).toString("hex")}`;
const encryptionKey = randomBytes(32).toString("hex");
const guestPort = 8600;

/** One answer per path; `/ok` is a valid one, to prove the guest and the path still work afterwards. */
const hostileServer = `
import socket, threading
ANSWERS = {
    b"/600": b"HTTP/1.1 600 Weird\\r\\ncontent-length: 2\\r\\n\\r\\nhi",
    b"/999": b"HTTP/1.1 999 X\\r\\n\\r\\nabc",
    b"/099": b"HTTP/1.1 099 X\\r\\n\\r\\n",
    b"/garbage": b"\\x00\\xffgarbage\\r\\n\\r\\n",
    b"/badreason": b"HTTP/1.1 200 \\x01bad\\r\\ncontent-length: 2\\r\\n\\r\\nok",
    b"/cut": b"HTTP/1.1 200 OK\\r\\ncontent-length: 1000000\\r\\n\\r\\n" + b"x" * 1000,
    b"/ok": b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nok",
}
def handle(c):
    try:
        data = b""
        while b"\\r\\n\\r\\n" not in data:
            d = c.recv(65536)
            if not d:
                return
            data += d
        path = data.split(b" ")[1].split(b"?")[0]
        c.sendall(ANSWERS.get(path, ANSWERS[b"/ok"]))
    finally:
        c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", ${guestPort}))
s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
`;

interface ErrorShape {
  error?: { code?: string; message?: string; requestId?: string };
  code?: number;
}

/** A request with an explicit Host header (fetch will not send one for `<port>-<id>.localhost`). */
function hostRouted(edgeUrl: string, host: string, path: string): Promise<{ status: number; body: string }> {
  const url = new URL(edgeUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, path, method: "GET", headers: { host } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        body += chunk;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

/** Sends an HTTP/1.1 Upgrade request on a raw socket and returns what came back before the close. */
function upgrade(edgeUrl: string, host: string, path: string): Promise<string> {
  const url = new URL(edgeUrl);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: url.hostname, port: Number(url.port) });
    let answer = "";
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(answer);
    }, 15_000);
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      answer += chunk;
    });
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(answer);
    });
    socket.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.write(
      `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\n\r\n`,
    );
  });
}

function expectBadResponse(status: number, text: string, where: string): void {
  expect(status, `${where}: ${text}`).toBe(502);
  const body = JSON.parse(text) as ErrorShape;
  expect(body.error?.code, `${where}: ${text}`).toBe("SANDBOX_BAD_RESPONSE");
  expect(body.error?.requestId, where).toMatch(/^req_/);
  expect(body.error?.message, where).toBeTruthy();
}

describe("a hostile guest behind the proxy", () => {
  let edge: NodeEdge | undefined;
  let agent: AgentProcess | undefined;
  let key = "";
  let sandboxId = "";
  const rawErrors: string[] = [];

  const api = async (method: string, path: string, json?: unknown): Promise<Response> => {
    if (!edge) throw new Error("no edge");
    return fetch(`${edge.url}${path}`, {
      method,
      headers: { "x-api-key": key, ...(json !== undefined ? { "content-type": "application/json" } : {}) },
      ...(json !== undefined ? { body: JSON.stringify(json) } : {}),
    });
  };
  const headerRouted = (path: string): Promise<Response> => {
    if (!edge) throw new Error("no edge");
    return fetch(`${edge.url}${path}`, {
      headers: { "e2b-sandbox-id": sandboxId, "e2b-sandbox-port": String(guestPort) },
    });
  };

  beforeAll(async () => {
    requireRoot();
    await requireImage();
    // Anything @hono/node-server prints by itself (the raw `Error: aborted` of a failed body) lands here.
    vi.spyOn(console, "error").mockImplementation((...args: unknown[]) => {
      rawErrors.push(args.map(String).join(" "));
    });
    agent = await startAgentProcess({ runtime: "namespace", namespaceOnly: true, rootDir: IMAGES_ROOT });
    edge = await startEdgeForAgent(agent, { adminKey, encryptionKey });
    key = await newTeamKey(edge, adminKey, "hostile", "hostile-guest");
    const created = await api("POST", "/v1/sandboxes", { template: TEMPLATE, timeoutSec: 600 });
    const createdText = await created.text();
    if (created.status !== 201) {
      throw new Error(`create: ${created.status} ${createdText}\n${(await agent.log()).slice(-3000)}`);
    }
    sandboxId = (JSON.parse(createdText) as { id: string }).id;
    const started = await api("POST", `/v1/sandboxes/${sandboxId}/exec`, {
      cmd: "cat > /tmp/hostile.py && (nohup python3 /tmp/hostile.py >/dev/null 2>&1 &)",
      stdin: hostileServer,
    });
    expect(started.status, await started.clone().text()).toBe(200);
    // expect.poll is for tests only; the guest's server takes a moment to bind.
    const deadline = Date.now() + 20_000;
    for (;;) {
      const probe = await headerRouted("/ok").catch(() => undefined);
      if (probe?.status === 200) break;
      if (Date.now() > deadline) throw new Error(`the guest's server never answered: ${probe?.status}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  });

  afterAll(async () => {
    vi.restoreAllMocks();
    if (sandboxId) await api("DELETE", `/v1/sandboxes/${sandboxId}`).catch(() => undefined);
    await edge?.close().catch(() => {});
    await agent?.stop().catch(() => {});
  });

  const malformed = ["/600", "/999", "/099", "/garbage"];

  it("answers 502 SANDBOX_BAD_RESPONSE by E2B headers", async () => {
    for (const path of malformed) {
      const res = await headerRouted(path);
      expectBadResponse(res.status, await res.text(), `headers ${path}`);
    }
  });

  it("answers 502 SANDBOX_BAD_RESPONSE by <port>-<id>.<domain> Host", async () => {
    if (!edge) throw new Error("no edge");
    for (const path of malformed) {
      const res = await hostRouted(edge.url, `${guestPort}-${sandboxId}.localhost`, path);
      expectBadResponse(res.status, res.body, `host ${path}`);
    }
  });

  it("answers 502 SANDBOX_BAD_RESPONSE on the WebSocket upgrade path", async () => {
    if (!edge) throw new Error("no edge");
    for (const path of malformed) {
      const answer = await upgrade(edge.url, `${guestPort}-${sandboxId}.localhost`, path);
      const [head = "", body = ""] = answer.split("\r\n\r\n");
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
      expectBadResponse(status, body, `upgrade ${path}`);
    }
  });

  it("relays a valid status with an invalid reason phrase without it", async () => {
    const res = await headerRouted("/badreason");
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("ok");
  });

  it("cuts the client off, rather than ending cleanly, when the guest's body stops halfway", async () => {
    const res = await headerRouted("/cut");
    expect(res.status).toBe(200);
    await expect(res.arrayBuffer()).rejects.toThrow();
  });

  it("keeps the edge and the agent up, and prints nothing outside the JSON log", async () => {
    if (!edge || !agent) throw new Error("no stack");
    expect((await fetch(`${edge.url}/health`)).status).toBe(200);
    expect((await fetch(`${agent.url}/health`)).status).toBe(200);
    const ok = await headerRouted("/ok");
    expect(ok.status).toBe(200);
    expect(await ok.text()).toBe("ok");
    expect(rawErrors.filter((line) => !line.startsWith("{"))).toEqual([]);
  });
});

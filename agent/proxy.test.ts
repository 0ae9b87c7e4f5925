import { createServer as createHttpServer, request } from "node:http";
import { connect, createServer, type Server, type Socket } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { parseAgentConfig } from "./config.js";
import { AgentError } from "./errors.js";
import type { HostInventory } from "./host-inventory.js";
import { noopLogger } from "./logger.js";
import { AgentMetrics } from "./metrics.js";
import type { SandboxManager } from "./sandboxes/manager.js";
import { type AgentServer, startServer } from "./server.js";

// The agent's real server and proxy, with the sandbox manager reduced to the one question the proxy
// asks (where does sandbox X answer?) and each guest a server on loopback that this test controls.

const token = "proxy-test-token-0123456789";
const sandboxId = "proxyguest0123456789";
const auth = { authorization: `Bearer ${token}` };

/** What the fake manager answers for `sandboxId`: an address, or the error a paused sandbox gets. */
let routing: "running" | "paused" = "running";
const manager = {
  proxyAddress: (id: string) => {
    if (id !== sandboxId) throw new AgentError("NOT_FOUND", "SANDBOX_NOT_FOUND", `sandbox ${id} not found`);
    if (routing === "paused") throw new AgentError("FAILED_PRECONDITION", "SANDBOX_PAUSED", `sandbox ${id} is paused`);
    return "127.0.0.1";
  },
} as unknown as SandboxManager;

async function agentServer(env: Record<string, string> = {}): Promise<AgentServer> {
  const parsed = parseAgentConfig(
    { AGENT_LISTEN_ADDRESS: "127.0.0.1:0", AGENT_STATE_DIR: "/tmp/wrenn-proxy-test", ...env },
    { cpuCount: 2, totalMemoryMb: 4096 },
  );
  if (!parsed.ok) throw new Error(parsed.errors.join("; "));
  return startServer({
    config: parsed.config,
    logger: noopLogger,
    manager,
    inventory: {} as HostInventory,
    metrics: new AgentMetrics(),
    token,
  });
}

let agent: AgentServer;
const guests: Server[] = [];

beforeAll(async () => {
  agent = await agentServer();
});
afterAll(async () => {
  await agent.close();
});
afterEach(async () => {
  routing = "running";
  await Promise.all(
    guests.splice(0).map(
      (s) =>
        new Promise<void>((resolve) => {
          s.close(() => resolve());
          (s as Server & { closeAllConnections?: () => void }).closeAllConnections?.();
        }),
    ),
  );
});

async function listen(s: Server): Promise<number> {
  guests.push(s);
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", () => resolve()));
  const address = s.address();
  return typeof address === "object" && address ? address.port : 0;
}

/** A guest that answers every request with the same raw bytes. */
function rawGuest(answer: string): Promise<number> {
  return listen(
    createServer((socket) => {
      socket.on("error", () => {});
      let head = "";
      socket.on("data", (d) => {
        head += d.toString("latin1");
        if (head.includes("\r\n\r\n")) socket.end(answer);
      });
    }),
  );
}

function proxyUrl(port: number, path = "/"): string {
  return `http://127.0.0.1:${agent.port}/proxy/${sandboxId}/${port}${path}`;
}

async function health(): Promise<number> {
  return (await fetch(`http://127.0.0.1:${agent.port}/health`)).status;
}

/** Sends raw bytes to the agent and collects everything it answers until it closes. */
function rawExchange(port: number, bytes: string, timeoutMs = 5_000): Promise<{ text: string; closedAfterMs: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = connect({ host: "127.0.0.1", port });
    let text = "";
    socket.on("data", (d) => {
      text += d.toString("latin1");
    });
    socket.on("error", () => {});
    socket.on("close", () => resolve({ text, closedAfterMs: Date.now() - started }));
    if (bytes !== "") socket.write(bytes);
    setTimeout(() => {
      socket.destroy();
      reject(new Error(`still open after ${timeoutMs} ms; got ${JSON.stringify(text.slice(0, 200))}`));
    }, timeoutMs).unref();
  });
}

describe("agent proxy: a hostile guest's answers", () => {
  it.each([
    ["status 600", "HTTP/1.1 600 Weird\r\ncontent-length: 2\r\n\r\nhi"],
    ["status 999", "HTTP/1.1 999 Nope\r\n\r\n"],
    ["garbage", "\u0000\u0001\u0002 not http at all\r\n\r\n"],
    ["status 1000", "HTTP/1.1 1000 X\r\n\r\n"],
    ["a final 101 to a plain request", "HTTP/1.1 101 Switching Protocols\r\n\r\n"],
  ])("%s: 502 SANDBOX_BAD_RESPONSE in the error shape, and the agent keeps serving", async (_name, answer) => {
    const port = await rawGuest(answer);
    const res = await fetch(proxyUrl(port, "/x"), { headers: auth });
    expect(res.status).toBe(502);
    expect(res.headers.get("wrenn-proxy-error")).toBe("SANDBOX_BAD_RESPONSE");
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(await res.json()).toEqual({
      error: { code: "SANDBOX_BAD_RESPONSE", message: expect.stringContaining(`sandbox ${sandboxId} port ${port}`) },
    });
    expect(await health()).toBe(200);
  });

  it("passes a valid answer on, without hop-by-hop headers or a forged proxy-error header", async () => {
    const port = await rawGuest(
      "HTTP/1.1 418 Teapot\r\ncontent-length: 5\r\nx-app: 1\r\nwrenn-proxy-error: FORGED\r\nkeep-alive: timeout=1\r\n\r\nhello",
    );
    const res = await fetch(proxyUrl(port, "/x"), { headers: auth });
    expect(res.status).toBe(418);
    expect(res.headers.get("x-app")).toBe("1");
    expect(res.headers.get("wrenn-proxy-error")).toBeNull();
    expect(await res.text()).toBe("hello");
  });

  it("a body cut short reaches the client as a broken response, not a short one", async () => {
    const port = await rawGuest("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort");
    const res = await fetch(proxyUrl(port), { headers: auth });
    expect(res.status).toBe(200);
    await expect(res.text()).rejects.toThrow();
    expect(await health()).toBe(200);
  });

  it.each([
    ["status 600", "HTTP/1.1 600 Weird\r\n\r\n"],
    ["garbage", "SSH-2.0-OpenSSH_9.2\r\n\r\n"],
  ])("an upgrade answered with %s: 502 SANDBOX_BAD_RESPONSE, connection closed", async (_name, answer) => {
    const port = await rawGuest(answer);
    const { text } = await rawExchange(
      agent.port,
      `GET /proxy/${sandboxId}/${port}/ws HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${token}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n`,
    );
    expect(text).toMatch(/^HTTP\/1\.1 502 Bad Gateway\r\n/);
    expect(text).toContain("wrenn-proxy-error: SANDBOX_BAD_RESPONSE");
    expect(JSON.parse(text.slice(text.indexOf("\r\n\r\n") + 4))).toMatchObject({
      error: { code: "SANDBOX_BAD_RESPONSE" },
    });
    expect(await health()).toBe(200);
  });

  it("an accepted upgrade streams both ways; a declined one is passed on", async () => {
    const port = await listen(
      createServer((socket) => {
        let head = "";
        let upgraded = false;
        socket.on("data", (d) => {
          if (upgraded) {
            socket.write(d.toString().toUpperCase());
            return;
          }
          head += d.toString("latin1");
          if (!head.includes("\r\n\r\n")) return;
          if (head.startsWith("GET /no ")) {
            socket.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 4\r\n\r\nnope");
            return;
          }
          upgraded = true;
          socket.write("HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: echo\r\n\r\n");
        });
      }),
    );
    const echoed = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: "127.0.0.1", port: agent.port });
      let received = "";
      socket.on("data", (d) => {
        received += d.toString();
        if (received.includes("\r\n\r\n") && !received.includes("PING")) socket.write("ping");
        if (received.includes("PING")) {
          socket.destroy();
          resolve(received);
        }
      });
      socket.on("error", reject);
      socket.write(
        `GET /proxy/${sandboxId}/${port}/ws HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${token}\r\nconnection: Upgrade\r\nupgrade: echo\r\n\r\n`,
      );
    });
    expect(echoed).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n/);
    expect(echoed.toLowerCase()).toContain("upgrade: echo");
    const declined = await rawExchange(
      agent.port,
      `GET /proxy/${sandboxId}/${port}/no HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${token}\r\nconnection: Upgrade\r\nupgrade: echo\r\n\r\n`,
    );
    expect(declined.text).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n[\s\S]*\r\n\r\nnope$/);
  });
});

describe("agent proxy: connections to guests", () => {
  it("reuses a kept-alive connection, and closes it when the sandbox pauses", async () => {
    let connections = 0;
    let closed = 0;
    const s = createHttpServer((_req, res) => res.end("ok"));
    s.on("connection", (socket: Socket) => {
      connections += 1;
      socket.on("close", () => {
        closed += 1;
      });
    });
    const port = await listen(s);
    for (let n = 0; n < 10; n++) {
      const res = await fetch(proxyUrl(port), { headers: auth });
      expect(await res.text()).toBe("ok");
    }
    expect(connections).toBe(1);
    expect(closed).toBe(0);

    routing = "paused";
    const deadline = Date.now() + 3_000;
    while (closed === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(closed).toBe(1);
    const paused = await fetch(proxyUrl(port), { headers: auth });
    expect(paused.status).toBe(502);
    expect(await paused.json()).toMatchObject({ error: { code: "SANDBOX_PAUSED" } });
  });

  it("an upload the client abandons reaches the guest as an aborted body, never a complete one", async () => {
    const seen: Array<{ complete: boolean; bytes: number }> = [];
    const s = createHttpServer((req, res) => {
      let bytes = 0;
      req.on("data", (d: Buffer) => {
        bytes += d.length;
      });
      req.on("end", () => res.end("stored"));
      req.on("close", () => seen.push({ complete: req.complete, bytes }));
    });
    const port = await listen(s);
    const url = new URL(proxyUrl(port, "/upload"));
    const req = request({
      host: url.hostname,
      port: url.port,
      path: url.pathname,
      method: "POST",
      headers: { ...auth, "content-length": String(10 * 1024 * 1024) },
    });
    req.on("error", () => {});
    req.write(Buffer.alloc(256 * 1024, 1));
    await new Promise((r) => setTimeout(r, 200));
    req.destroy();
    const deadline = Date.now() + 3_000;
    while (seen.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(seen).toHaveLength(1);
    expect(seen[0]?.complete).toBe(false);
  });
});

describe("agent listener bounds", () => {
  it("closes connections that send nothing or half a head, and refuses connections beyond the cap", async () => {
    const bounded = await agentServer({ AGENT_HEADERS_TIMEOUT_MS: "400", AGENT_MAX_CONNECTIONS: "2" });
    try {
      const silent = await rawExchange(bounded.port, "");
      expect(silent.closedAfterMs).toBeGreaterThanOrEqual(300);
      expect(silent.closedAfterMs).toBeLessThan(3_000);
      // Node checks the headers timeout on an interval (a quarter of it here), so allow for that.
      const slow = await rawExchange(bounded.port, "GET /health HTTP/1.1\r\nhost: x\r\n");
      expect(slow.closedAfterMs).toBeLessThan(3_000);
      expect(slow.text).not.toContain("200 OK");

      const held = [
        connect({ port: bounded.port, host: "127.0.0.1" }),
        connect({ port: bounded.port, host: "127.0.0.1" }),
      ];
      await Promise.all(held.map((s) => new Promise((r) => s.once("connect", r))));
      await new Promise((r) => setTimeout(r, 50));
      const third = await rawExchange(bounded.port, "GET /health HTTP/1.1\r\nhost: x\r\n\r\n");
      expect(third.text).toBe("");
      expect(third.closedAfterMs).toBeLessThan(300);
      for (const s of held) s.destroy();
    } finally {
      await bounded.close();
    }
  });
});

import { randomBytes } from "node:crypto";
import type { Server } from "node:http";
import { request as httpRequest } from "node:http";
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { serve } from "@hono/node-server";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createApp } from "../../edge/app.js";
import type { ProxyRequestInit } from "../../edge/clients/agent.js";
import type { AppDeps } from "../../edge/context.js";
import type { Database, DatabaseHandle } from "../../edge/db/client.js";
import { noopLogger } from "../../edge/logger.js";
import { createAgentProxyFetch } from "../../edge/node/agent-proxy-fetch.js";
import { openNodeDatabase } from "../../edge/node/database.js";
import { guardRelayedBodies } from "../../edge/node/relay-failures.js";
import { streamLargeBodies } from "../../edge/node/request-body.js";
import { attachSandboxUpgrades } from "../../edge/node/sandbox-upgrades.js";
import { ensureAdminKey } from "../../edge/services/auth/bootstrap.js";
import { createServiceDeps, serviceContext } from "../../edge/services/context.js";
import { envdFileSignature } from "../../edge/services/e2b/signature.js";
import { signedUrlIndexRefreshMs } from "../../edge/services/e2b/signed-url-index.js";
import { FakeAgent, FakeAgentConnector, testEncryptionKey } from "../helpers/edge-app.js";

/**
 * The edge must hold even when a host agent relays whatever the guest sent (as the hand-written relay
 * did): a raw TCP server on loopback plays the agent's `/proxy` route and answers statuses `Response`
 * refuses, bytes that are not HTTP, bodies cut off halfway, HTML with cookies for a download, and
 * endless bodies. The agent's Connect API stays the in-memory fake (a double at that protocol
 * boundary); everything on the edge side is the real Node edge: app, proxy fetch, upgrade hook.
 */

const adminKey = `wrn_test_admin_${randomBytes(16).toString("hex")}`;

/** What the raw "agent" sent of endless bodies, to prove the edge stopped reading early. */
const endless = { sent: 0, stopped: false };

/** One answer per guest path; the raw agent closes the connection after each. */
function answerFor(guestPath: string, socket: Socket): void {
  const [pathname = "", query = ""] = guestPath.split("?");
  const send = (text: string): void => {
    socket.end(Buffer.from(text, "latin1"));
  };
  switch (pathname) {
    case "/600":
      send("HTTP/1.1 600 Weird\r\ncontent-length: 2\r\n\r\nhi");
      return;
    case "/999":
      send("HTTP/1.1 999 X\r\n\r\nabc");
      return;
    case "/099":
      send("HTTP/1.1 099 X\r\n\r\n");
      return;
    case "/garbage":
      send("\u0000\u00ffgarbage\r\n\r\n");
      return;
    case "/badheader":
      send("HTTP/1.1 200 OK\r\nx-a: \u007fb\r\ncontent-length: 2\r\n\r\nok");
      return;
    case "/cut":
      socket.write("HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n");
      socket.write("x".repeat(1000), () => socket.destroy());
      return;
    case "/page": {
      const body = "<script>document.title='guest'</script>";
      send(
        `HTTP/1.1 200 OK\r\ncontent-type: text/html\r\nset-cookie: session=guest; Path=/\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
      );
      return;
    }
    case "/ws":
      // A guest that upgrades, then echoes what it gets (bytes that came with the head included).
      socket.write("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\nhello ");
      socket.on("data", (data: Buffer) => socket.write(data));
      return;
    case "/metrics":
      streamEndlessly(socket, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n[");
      return;
    case "/files": {
      if (new URLSearchParams(query).get("path") === "/bad-status") {
        send("HTTP/1.1 600 Weird\r\ncontent-length: 2\r\n\r\nhi");
        return;
      }
      if (new URLSearchParams(query).get("path") === "/huge") {
        streamEndlessly(socket, "HTTP/1.1 500 Oops\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n");
        return;
      }
      const body = "<html><script>fetch('/v1/api-keys')</script></html>";
      send(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\nset-cookie: stolen=1; Path=/\r\n" +
          `etag: "v1"\r\nx-guest: yes\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
      );
      return;
    }
    default:
      send("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
      return;
  }
}

/** Sends 1 MiB chunks until the reader goes away, never more than 1 GiB; records how much went. */
function streamEndlessly(socket: Socket, head: string): void {
  const chunk = Buffer.alloc(1024 * 1024, 0x20);
  socket.write(head);
  const pump = () => {
    while (endless.sent < 1024 ** 3 && !socket.destroyed) {
      endless.sent += chunk.length;
      if (!socket.write(chunk)) {
        socket.once("drain", pump);
        return;
      }
    }
    socket.end();
  };
  socket.once("close", () => {
    endless.stopped = true;
  });
  pump();
}

/** A TCP server that reads one request head, routes on `/proxy/{id}/{port}/<guest path>`, answers, closes. */
async function startRawAgent(): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    let head = "";
    const onData = (data: Buffer) => {
      head += data.toString("latin1");
      if (!head.includes("\r\n\r\n")) return;
      socket.off("data", onData);
      const target = head.slice(0, head.indexOf("\r\n")).split(" ")[1] ?? "/";
      const guestPath = `/${target.split("/").slice(4).join("/")}`;
      answerFor(guestPath, socket);
    };
    socket.on("data", onData);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The in-memory fake agent, except that `/proxy` goes over HTTP to the raw agent with the given fetch. */
class RelayingAgent extends FakeAgent {
  relayFetch: typeof fetch = createAgentProxyFetch();

  override async proxy(
    sandboxId: string,
    port: number,
    pathAndQuery: string,
    init: ProxyRequestInit,
  ): Promise<Response> {
    return this.relayFetch(`${this.address}/proxy/${sandboxId}/${port}${pathAndQuery}`, {
      method: init.method,
      headers: init.headers ?? {},
      body: init.body ?? null,
      ...(init.signal ? { signal: init.signal } : {}),
      duplex: "half",
    } as RequestInit);
  }
}

interface ErrorShape {
  error?: { code?: string; message?: string; requestId?: string };
  code?: number;
}

/** Counts the queries the app makes, by drizzle entry point, to show signed-URL routing does no scans. */
function countingDatabase(db: Database): { db: Database; selects: () => number } {
  let selects = 0;
  const proxy = new Proxy(db, {
    get(target, property, receiver) {
      if (property === "select") selects++;
      const value = Reflect.get(target, property, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { db: proxy, selects: () => selects };
}

describe("the Node edge in front of an agent that relays anything", () => {
  let database: DatabaseHandle;
  let counted: ReturnType<typeof countingDatabase>;
  let rawAgent: Awaited<ReturnType<typeof startRawAgent>>;
  let agent: RelayingAgent;
  let server: Server;
  let edgeUrl = "";
  let key = "";
  let sandboxId = "";
  let envdToken = "";
  const rawErrors: string[] = [];

  const call = (method: string, path: string, init: { json?: unknown; headers?: Record<string, string> } = {}) =>
    fetch(`${edgeUrl}${path}`, {
      method,
      headers: {
        "x-api-key": key,
        ...(init.json !== undefined ? { "content-type": "application/json" } : {}),
        ...init.headers,
      },
      ...(init.json !== undefined ? { body: JSON.stringify(init.json) } : {}),
    });
  const headerRouted = (path: string, port = 8000) =>
    fetch(`${edgeUrl}${path}`, { headers: { "e2b-sandbox-id": sandboxId, "e2b-sandbox-port": String(port) } });

  beforeAll(async () => {
    vi.spyOn(console, "error").mockImplementation((...args: unknown[]) => {
      rawErrors.push(args.map(String).join(" "));
    });
    rawAgent = await startRawAgent();
    database = await openNodeDatabase({ pgliteDataDir: "memory://" });
    counted = countingDatabase(database.db);
    const fakes = new FakeAgentConnector();
    agent = new RelayingAgent(rawAgent.url, `host-token-${randomBytes(8).toString("hex")}`);
    fakes.add(agent);
    const deps: AppDeps = {
      ...(await createServiceDeps({
        encryptionKey: testEncryptionKey,
        config: { maxUploadBytes: 1024 ** 3, maxJsonBytes: 1024 ** 2 },
        logger: noopLogger,
        agents: fakes,
      })),
      database: () => ({ db: counted.db, close: async () => {} }),
    };
    await ensureAdminKey(serviceContext(deps, { db: database.db, requestId: "t" }), adminKey);
    const app = createApp(deps);
    server = serve({
      fetch: streamLargeBodies(guardRelayedBodies(app.fetch, noopLogger)),
      port: 0,
      hostname: "127.0.0.1",
    }) as Server;
    await new Promise<void>((resolve) => server.once("listening", () => resolve()));
    attachSandboxUpgrades(server, deps);
    edgeUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    key = adminKey;
    const host = await call("POST", "/v1/hosts", { json: { address: agent.address, token: agent.token } });
    expect(host.status, await host.clone().text()).toBe(201);
    const made = await call("POST", "/v1/api-keys", { json: { name: "hostile", newTeamName: "hostile-agent" } });
    key = ((await made.json()) as { secret: string }).secret;
    const created = await call("POST", "/v2/sandboxes", { json: { templateID: "base" } });
    expect(created.status, await created.clone().text()).toBe(201);
    ({ sandboxID: sandboxId, envdAccessToken: envdToken } = (await created.json()) as {
      sandboxID: string;
      envdAccessToken: string;
    });
  }, 60_000);

  afterAll(async () => {
    vi.restoreAllMocks();
    await new Promise<void>((resolve) => server?.close(() => resolve()));
    await rawAgent?.close();
    await database?.close();
  });

  for (const relay of ["node:http (the Node edge)", "fetch (undici, as on Workers)"] as const) {
    it(`answers 502 SANDBOX_BAD_RESPONSE in the error shape for each malformed answer, over ${relay}`, async () => {
      agent.relayFetch = relay.startsWith("node") ? createAgentProxyFetch() : (input, init) => fetch(input, init);
      const malformed = relay.startsWith("node")
        ? ["/600", "/999", "/099", "/garbage", "/badheader"]
        : // undici itself rejects what is not HTTP; it hands out statuses 600 and 999 as they came.
          ["/600", "/999"];
      for (const path of malformed) {
        const res = await headerRouted(path);
        const text = await res.text();
        expect(res.status, `${path}: ${text}`).toBe(502);
        const body = JSON.parse(text) as ErrorShape;
        expect(body.error?.code, `${path}: ${text}`).toBe("SANDBOX_BAD_RESPONSE");
        expect(body.error?.requestId).toMatch(/^req_/);
        expect(body.code).toBe(502);
      }
      agent.relayFetch = createAgentProxyFetch();
    });
  }

  it("answers the API's file read of a malformed envd answer with 502 SANDBOX_BAD_RESPONSE", async () => {
    const read = await call("POST", `/v1/sandboxes/${sandboxId}/files/read`, { json: { path: "/bad-status" } });
    const text = await read.text();
    expect(read.status, text).toBe(502);
    expect((JSON.parse(text) as ErrorShape).error?.code).toBe("SANDBOX_BAD_RESPONSE");
  });

  it("answers 502 SANDBOX_BAD_RESPONSE on the upgrade path, whatever follows the agent's status line", async () => {
    for (const path of ["/600", "/999", "/garbage"]) {
      const answer = await rawUpgrade(edgeUrl, path, sandboxId);
      const [head = "", body = ""] = answer.split("\r\n\r\n");
      expect(head, `${path}: ${answer}`).toMatch(/^HTTP\/1\.1 502 /);
      expect((JSON.parse(body) as ErrorShape).error?.code).toBe("SANDBOX_BAD_RESPONSE");
    }
  });

  it("still splices a real upgrade through, bytes after the head included", async () => {
    const answer = await rawUpgrade(edgeUrl, "/ws", sandboxId, "ping");
    expect(answer).toMatch(/^HTTP\/1\.1 101 /);
    expect(answer.endsWith("\r\n\r\nhello ping")).toBe(true);
  });

  it("cuts the client off when the relayed body stops halfway, with nothing printed outside the log", async () => {
    const res = await headerRouted("/cut");
    expect(res.status).toBe(200);
    await expect(res.arrayBuffer()).rejects.toThrow();
    expect((await fetch(`${edgeUrl}/health`)).status).toBe(200);
    expect(rawErrors.filter((line) => !line.startsWith("{"))).toEqual([]);
  });

  it("serves a signed /files URL as an inert attachment, whatever the guest's headers say", async () => {
    const signature = await envdFileSignature({
      path: "/home/user/page.html",
      operation: "read",
      username: "",
      accessToken: envdToken,
    });
    const signed = await fetch(
      `${edgeUrl}/files?path=${encodeURIComponent("/home/user/page.html")}&signature=${encodeURIComponent(signature)}`,
    );
    expect(signed.status).toBe(200);
    expect(Object.fromEntries(signed.headers)).toMatchObject({
      "content-type": "application/octet-stream",
      "x-content-type-options": "nosniff",
      "content-security-policy": "sandbox",
      "content-disposition": "attachment; filename*=UTF-8''page.html",
      etag: '"v1"',
    });
    expect(signed.headers.get("set-cookie")).toBeNull();
    expect(signed.headers.get("x-guest")).toBeNull();
    expect(await signed.text()).toContain("<script>");
    // The same for envd's /files reached by the SDK's routing headers.
    const routed = await headerRouted("/files?path=%2Fhome%2Fuser%2Fpage.html", 49983);
    expect(routed.headers.get("content-type")).toBe("application/octet-stream");
    expect(routed.headers.get("x-content-type-options")).toBe("nosniff");
    expect(routed.headers.get("content-security-policy")).toBe("sandbox");
    expect(routed.headers.get("set-cookie")).toBeNull();
    await routed.arrayBuffer();
  });

  it("serves the Swagger page (same origin as signed downloads) without keeping the API key in localStorage", async () => {
    const page = await (await fetch(`${edgeUrl}/docs`)).text();
    expect(page).toContain("persistAuthorization: false");
    expect(page).not.toContain("persistAuthorization: true");
  });

  it("drops a guest's Set-Cookie on header-routed traffic, which may arrive on the API's own origin", async () => {
    const byHeaders = await headerRouted("/page");
    expect(byHeaders.headers.get("set-cookie")).toBeNull();
    expect(byHeaders.headers.get("content-type")).toBe("text/html");
    await byHeaders.arrayBuffer();
    // On its own origin (`<port>-<id>.<domain>`) the guest's web app keeps its cookies.
    const byHost = await hostRouted(edgeUrl, `8000-${sandboxId}.localhost`, "/page");
    expect(byHost.headers["set-cookie"]).toEqual(["session=guest; Path=/"]);
  });

  it("routes signed URLs without a database scan per request", async () => {
    const bogus = (i: number) =>
      fetch(`${edgeUrl}/files?path=%2Fx${i}&signature=v1_${randomBytes(32).toString("base64").replace(/=+$/, "")}`);
    const before = counted.selects();
    const misses = await Promise.all(Array.from({ length: 40 }, (_, i) => bogus(i)));
    for (const miss of misses) {
      expect(miss.status).toBe(502);
      expect(((await miss.json()) as ErrorShape).error?.code).toBe("SANDBOX_NOT_FOUND");
    }
    // 40 unauthenticated misses at once: one shared load of the index, not 40 scans.
    expect(counted.selects() - before).toBeLessThanOrEqual(2);
    // A hit costs the one row it routes to (and the host it runs on), nothing per live sandbox.
    const path = "/home/user/page.html";
    const signature = await envdFileSignature({ path, operation: "read", username: "", accessToken: envdToken });
    await new Promise((r) => setTimeout(r, signedUrlIndexRefreshMs));
    const atHit = counted.selects();
    const hit = await fetch(
      `${edgeUrl}/files?path=${encodeURIComponent(path)}&signature=${encodeURIComponent(signature)}`,
    );
    expect(hit.status).toBe(200);
    await hit.arrayBuffer();
    expect(counted.selects() - atHit).toBe(1);
  });

  it("stops reading an endless envd answer at its bound with a clear error, holding little memory", async () => {
    endless.sent = 0;
    endless.stopped = false;
    const rssBefore = process.memoryUsage().rss;
    // Metrics come from the database (the agent's sampler reads envd, with its own bound: see
    // agent/telemetry/sampler.test.ts): the edge never reads a guest's /metrics itself any more.
    const metrics = await call("GET", `/sandboxes/${sandboxId}/metrics`);
    const text = await metrics.text();
    expect(metrics.status, text).toBe(200);
    expect(Array.isArray(JSON.parse(text))).toBe(true);
    expect(endless.sent).toBe(0);
    // A failed read whose error body never ends: only its start becomes the message.
    const read = await call("POST", `/v1/sandboxes/${sandboxId}/files/read`, { json: { path: "/huge" } });
    const readText = await read.text();
    expect(read.status, readText).toBeGreaterThanOrEqual(500);
    expect((JSON.parse(readText) as ErrorShape).error?.code).toBe("AGENT_ERROR");
    await vi.waitFor(() => expect(endless.stopped).toBe(true), { timeout: 10_000 });
    expect(endless.sent).toBeLessThan(64 * 1024 * 1024);
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(64 * 1024 * 1024);
  });
});

/** An Upgrade request for a user port of the sandbox, by Host, on a raw socket; returns all it got. */
function rawUpgrade(edgeUrl: string, path: string, sandboxId: string, send?: string): Promise<string> {
  const url = new URL(edgeUrl);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: url.hostname, port: Number(url.port) });
    let answer = "";
    let sentOnce = false;
    const timer = setTimeout(() => socket.destroy(), 10_000);
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      answer += chunk;
      if (send === undefined) return;
      // An upgraded connection stays open: send once after the head, finish once the echo is back.
      if (answer.includes("\r\n\r\n") && !answer.includes(send)) {
        if (!sentOnce) socket.write(send);
        sentOnce = true;
      } else if (answer.endsWith(send)) socket.destroy();
    });
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(answer);
    });
    socket.on("error", reject);
    socket.write(
      `GET ${path} HTTP/1.1\r\nHost: 8000-${sandboxId}.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\n\r\n`,
    );
  });
}

/** A GET with an explicit Host header (fetch sends none of its own choosing). */
function hostRouted(
  edgeUrl: string,
  host: string,
  path: string,
): Promise<{ status: number; headers: Record<string, string | string[] | undefined> }> {
  const url = new URL(edgeUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, path, headers: { host } }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on("error", reject);
    req.end();
  });
}

import type { IncomingMessage, Server } from "node:http";
import { connect as connectTcp, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import { connect as connectTls } from "node:tls";
import type { AppDeps } from "../context.js";
import { requestIdHeader } from "../middleware/init.js";
import { decideSandboxRoute, guestRequestHeaders } from "../proxy/sandbox-proxy.js";
import type { ServiceContext } from "../services/context.js";
import { randomString } from "../services/ids.js";

/**
 * WebSocket (and any HTTP/1.1 Upgrade) for the sandbox proxy on Node. Hono's `fetch` interface cannot
 * hand over a socket, so Node's `upgrade` event gets the request, the shared routing decision picks
 * the sandbox and its agent, and the client socket is spliced onto an upgrade request to the agent's
 * `/proxy/{id}/{port}/…` route. (Workers would use WebSocketPair; not wired up.)
 */
export function attachSandboxUpgrades(server: unknown, deps: AppDeps): void {
  (server as Server).on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on("error", () => socket.destroy());
    handleUpgrade(deps, req, socket, head).catch((err: unknown) => {
      deps.logger.error("sandbox upgrade failed", { err });
      writeRaw(socket, 500, JSON.stringify({ code: 500, message: "internal error" }));
    });
  });
}

function writeRaw(socket: Duplex, status: number, body: string, contentType = "application/json"): void {
  if (socket.destroyed) return;
  socket.end(
    `HTTP/1.1 ${status} ${status === 502 ? "Bad Gateway" : "Error"}\r\ncontent-type: ${contentType}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

function requestHeaders(req: IncomingMessage): Headers {
  const headers = new Headers();
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    headers.append(req.rawHeaders[i] ?? "", req.rawHeaders[i + 1] ?? "");
  }
  return headers;
}

async function handleUpgrade(deps: AppDeps, req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
  const requestId = `req_${randomString(20, "abcdefghijklmnopqrstuvwxyz0123456789")}`;
  const database = deps.database();
  let decision: Awaited<ReturnType<typeof decideSandboxRoute>>;
  try {
    const ctx: ServiceContext = {
      db: database.db,
      agents: deps.agents,
      secrets: deps.secrets,
      logger: deps.logger.child({ requestId }),
      requestId,
      config: deps.config,
      now: deps.now ?? (() => new Date()),
    };
    const headers = requestHeaders(req);
    // The Host header (which routes) travels in `headers`; the URL's host is a placeholder because a
    // sandbox host like `8000-<id>.127.0.0.1:3000` is not a valid URL host.
    const request = new Request(`http://sandbox-proxy.invalid${req.url ?? "/"}`, {
      method: req.method ?? "GET",
      headers,
    });
    decision = await decideSandboxRoute(ctx, request);
  } finally {
    await database.close().catch(() => {});
  }
  if (decision.kind === "not-sandbox-traffic") {
    writeRaw(socket, 404, JSON.stringify({ code: 404, message: "upgrades are only served for sandbox traffic" }));
    return;
  }
  if (decision.kind === "refuse") {
    writeRaw(socket, decision.response.status, await decision.response.text());
    return;
  }
  const { destination } = decision;
  const agentUrl = new URL(destination.target.address);
  const tls = agentUrl.protocol === "https:";
  const port = Number(agentUrl.port || (tls ? 443 : 80));
  const upstream: Socket = tls
    ? connectTls({ host: agentUrl.hostname, port, servername: agentUrl.hostname })
    : connectTcp({ host: agentUrl.hostname, port });
  const base = agentUrl.pathname.replace(/\/+$/, "");
  const lines = [
    `${req.method ?? "GET"} ${base}/proxy/${destination.sandboxId}/${destination.port}${destination.pathAndQuery} HTTP/1.1`,
    `host: ${agentUrl.host}`,
    `authorization: Bearer ${destination.target.token}`,
    `${requestIdHeader}: ${requestId}`,
    "connection: Upgrade",
    `upgrade: ${req.headers.upgrade ?? "websocket"}`,
  ];
  for (const [name, value] of Object.entries(guestRequestHeaders(requestHeaders(req)))) {
    if (name === "accept-encoding") continue;
    lines.push(`${name}: ${value.replace(/[\r\n]/g, " ")}`);
  }
  upstream.once(tls ? "secureConnect" : "connect", () => {
    upstream.write(`${lines.join("\r\n")}\r\n\r\n`);
    if (head.length > 0) upstream.write(head);
    upstream.pipe(socket);
    socket.pipe(upstream);
  });
  upstream.once("error", () => {
    if (!socket.destroyed && socket.writable) {
      writeRaw(
        socket,
        502,
        JSON.stringify({ sandboxId: destination.sandboxId, message: "agent unreachable", code: 502 }),
      );
    }
    upstream.destroy();
  });
  socket.once("close", () => upstream.destroy());
  upstream.once("close", () => socket.destroy());
}

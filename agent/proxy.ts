import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { connect, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import { HTTP_STATUS } from "./error-map.js";
import { AgentError } from "./errors.js";
import type { Logger } from "./logger.js";
import { type RelayRequest, startRelay } from "./proxy-relay.js";
import type { SandboxManager } from "./sandboxes/manager.js";

/**
 * `/proxy/{sandboxId}/{port}/…`: HTTP and WebSocket to a port of the guest, streamed both ways. The
 * agent's bearer token is never forwarded; a caller that needs an Authorization header in the guest
 * (envd's Basic user) sends it as `Wrenn-Guest-Authorization`.
 */

export const PROXY_PREFIX = "/proxy/";
export const GUEST_AUTHORIZATION_HEADER = "wrenn-guest-authorization";

const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
  "host",
  "authorization",
  GUEST_AUTHORIZATION_HEADER,
  "http2-settings",
]);

/** Request headers the relay sets itself (body framing), or that the agent's server already answered. */
const NOT_FORWARDED = new Set(["content-length", "expect"]);

export interface ProxyTarget {
  sandboxId: string;
  port: number;
  /** Path and query to request from the guest, starting with "/". */
  path: string;
}

/** Parses `/proxy/{id}/{port}/rest?query`; undefined when the URL is not a proxy URL. */
export function parseProxyUrl(url: string): ProxyTarget | AgentError | undefined {
  if (!url.startsWith(PROXY_PREFIX)) return undefined;
  const match = /^\/proxy\/([^/]+)\/([^/?]+)(\/[^?]*)?(\?.*)?$/.exec(url);
  if (!match)
    return new AgentError("INVALID_ARGUMENT", "INVALID_PROXY_PATH", "expected /proxy/{sandboxId}/{port}/path");
  const port = Number(match[2]);
  if (!/^[0-9]{1,5}$/.test(match[2] ?? "") || port < 1 || port > 65_535) {
    return new AgentError("INVALID_ARGUMENT", "INVALID_PORT", `invalid port ${JSON.stringify(match[2])}`);
  }
  return { sandboxId: match[1] ?? "", port, path: `${match[3] ?? "/"}${match[4] ?? ""}` };
}

function upstreamHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name.startsWith(":") || HOP_BY_HOP.has(name) || NOT_FORWARDED.has(name)) continue;
    out[name] = value;
  }
  const guestAuth = headers[GUEST_AUTHORIZATION_HEADER];
  if (typeof guestAuth === "string") out.authorization = guestAuth;
  return out;
}

type AnyResponse = ServerResponse | Http2ServerResponse;
type AnyRequest = IncomingMessage | Http2ServerRequest;

export function sendJsonError(res: AnyResponse, status: number, code: string, message: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ error: { code, message } });
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

function resolveTarget(
  manager: SandboxManager,
  target: ProxyTarget,
): { address: string } | { status: number; code: string; message: string } {
  try {
    return { address: manager.proxyAddress(target.sandboxId) };
  } catch (err) {
    if (err instanceof AgentError) {
      // A paused or stopping sandbox is a bad gateway for the client, as E2B's proxy answers.
      const status = err.code === "FAILED_PRECONDITION" ? 502 : HTTP_STATUS[err.code];
      return { status, code: err.reason, message: err.message };
    }
    throw err;
  }
}

export function proxyHttp(
  manager: SandboxManager,
  logger: Logger,
  req: AnyRequest,
  res: AnyResponse,
  target: ProxyTarget,
): void {
  const resolved = resolveTarget(manager, target);
  if ("status" in resolved) {
    sendJsonError(res, resolved.status, resolved.code, resolved.message);
    return;
  }
  const upstream = startRelay(
    {
      host: resolved.address,
      port: target.port,
      method: req.method ?? "GET",
      path: target.path,
      headers: upstreamHeaders(req.headers),
      body: requestBody(req),
    },
    {
      onHead: (head) => {
        const headers: Record<string, string | string[]> = {};
        for (const [name, value] of Object.entries(head.headers)) {
          if (!HOP_BY_HOP.has(name)) headers[name] = value;
        }
        res.writeHead(head.status, headers);
      },
      onData: (chunk) => {
        const more = (res as ServerResponse).write(chunk);
        if (!more) res.once("drain", () => upstream.resume());
        return more;
      },
      onEnd: () => {
        res.end();
      },
      onError: (err, beforeHead) => {
        if (!beforeHead) {
          res.destroy();
        } else if (err.code === "ECONNREFUSED") {
          sendJsonError(res, 502, "PORT_NOT_OPEN", `port is not open: ${target.port} in sandbox ${target.sandboxId}`);
        } else {
          logger.warn("proxy upstream failed", { sandboxId: target.sandboxId, port: target.port, err: err.message });
          sendJsonError(
            res,
            502,
            "UPSTREAM_ERROR",
            `sandbox ${target.sandboxId} port ${target.port}: ${err.code ?? err.message}`,
          );
        }
      },
    },
  );
  // The client went away (or the response finished): stop talking to the guest.
  res.on("close", () => upstream.destroy());
  const body = req as NodeJS.ReadableStream & { on: IncomingMessage["on"] };
  body.on("data", (chunk: Buffer) => {
    if (!upstream.write(chunk)) {
      body.pause();
      upstream.socket.once("drain", () => body.resume());
    }
  });
  body.on("end", () => upstream.end());
  // A client that aborts its upload must not leave the guest with a complete-looking body.
  body.on("error", () => upstream.destroy());
  body.on("aborted", () => upstream.destroy());
}

/** How the request's body is framed on its way to the guest (the client's own framing is gone). */
function requestBody(req: AnyRequest): RelayRequest["body"] {
  const length = req.headers["content-length"];
  if (length !== undefined && /^\d+$/.test(length)) return { kind: "length", bytes: Number(length) };
  if (req.headers["transfer-encoding"] !== undefined) return { kind: "chunked" };
  // HTTP/2 requests may stream a body without announcing a length.
  if (!("socket" in req && req.httpVersionMajor === 1) && req.method !== "GET" && req.method !== "HEAD") {
    return { kind: "chunked" };
  }
  return { kind: "none" };
}

function writeRawError(socket: Duplex, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } });
  socket.end(
    `HTTP/1.1 ${status} ${status === 502 ? "Bad Gateway" : "Error"}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** WebSocket (or any HTTP/1.1 upgrade): replays the request to the guest, then splices the sockets. */
export function proxyUpgrade(
  manager: SandboxManager,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  target: ProxyTarget,
): void {
  const resolved = resolveTarget(manager, target);
  if ("status" in resolved) {
    writeRawError(socket, resolved.status, resolved.code, resolved.message);
    return;
  }
  const upstream: Socket = connect({ host: resolved.address, port: target.port });
  let connected = false;
  upstream.once("connect", () => {
    connected = true;
    const lines = [`${req.method ?? "GET"} ${target.path} HTTP/1.1`, `host: ${resolved.address}:${target.port}`];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i] ?? "";
      const lower = name.toLowerCase();
      if (lower === "host" || lower === "authorization" || lower === GUEST_AUTHORIZATION_HEADER) continue;
      lines.push(`${name}: ${req.rawHeaders[i + 1] ?? ""}`);
    }
    const guestAuth = req.headers[GUEST_AUTHORIZATION_HEADER];
    if (typeof guestAuth === "string") lines.push(`authorization: ${guestAuth}`);
    upstream.write(`${lines.join("\r\n")}\r\n\r\n`);
    if (head.length > 0) upstream.write(head);
    upstream.pipe(socket);
    socket.pipe(upstream);
  });
  upstream.once("error", (err: NodeJS.ErrnoException) => {
    if (!connected) {
      const refused = err.code === "ECONNREFUSED";
      writeRawError(
        socket,
        502,
        refused ? "PORT_NOT_OPEN" : "UPSTREAM_ERROR",
        refused ? "port is not open" : String(err.code),
      );
    } else socket.destroy();
  });
  socket.on("error", () => upstream.destroy());
  socket.on("close", () => upstream.destroy());
  upstream.on("close", () => socket.destroy());
}

import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import type { Duplex } from "node:stream";
import { HTTP_STATUS } from "./error-map.js";
import { AgentError } from "./errors.js";
import type { Logger } from "./logger.js";
import {
  type ClientBody,
  GuestConnections,
  type GuestExchange,
  type GuestFailure,
  type GuestPoolLimits,
  type GuestRequest,
  sendToGuest,
} from "./proxy-relay.js";
import type { SandboxManager } from "./sandboxes/manager.js";
/**
 * `/proxy/{sandboxId}/{port}/…`: HTTP and WebSocket to a port of the guest, streamed both ways. The
 * agent's bearer token is never forwarded; a caller that needs an Authorization header in the guest
 * (envd's Basic user) sends it as `Wrenn-Guest-Authorization`.
 */

export const PROXY_PREFIX = "/proxy/";
export const GUEST_AUTHORIZATION_HEADER = "wrenn-guest-authorization";

/**
 * The Host the guest should see (E2B's `maskRequestHost`, resolved by the edge); without it the guest
 * sees `<its address>:<port>`. Only the edge reaches this proxy (it holds the agent's token).
 */
export const GUEST_HOST_HEADER = "wrenn-guest-host";
/** "1" when the guest's port speaks TLS (E2B's `httpsPorts`): the proxy connects with TLS, unverified. */
export const GUEST_TLS_HEADER = "wrenn-guest-tls";

/** A Host value: a name or address with an optional port, nothing that could split a header. */
const HOST_VALUE = /^[A-Za-z0-9._~\-[\]:]{1,300}$/;

/** Whether the edge asked for TLS to the guest's port. */
function guestTls(headers: IncomingHttpHeaders): boolean {
  return headers[GUEST_TLS_HEADER] === "1";
}

/** The Host header for the guest: the edge's mask when it sent a well-formed one. */
function guestHostHeader(headers: IncomingHttpHeaders): string | undefined {
  const value = headers[GUEST_HOST_HEADER];
  return typeof value === "string" && HOST_VALUE.test(value) ? value : undefined;
}

/**
 * Set on every error the agent's proxy answers itself, so the edge can tell the agent's 502 from a
 * guest's own; removed from guests' answers so a guest cannot forge one.
 */
export const PROXY_ERROR_HEADER = "wrenn-proxy-error";

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
  GUEST_HOST_HEADER,
  GUEST_TLS_HEADER,
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
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
    [PROXY_ERROR_HEADER]: code,
  });
  res.end(body);
}

function resolveTarget(
  manager: Pick<SandboxManager, "proxyAddress">,
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

/** The headers of a guest's answer that go on to the client. */
function downstreamHeaders(response: IncomingMessage): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(response.headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(name) && name !== PROXY_ERROR_HEADER) headers[name] = value;
  }
  return headers;
}

/** How the request's body is framed on its way to the guest (the client's own framing is gone). */
function requestBody(req: AnyRequest): GuestRequest["body"] {
  const length = req.headers["content-length"];
  if (length !== undefined && /^\d+$/.test(length)) return { kind: "length", bytes: Number(length) };
  if (req.headers["transfer-encoding"] !== undefined) return { kind: "chunked" };
  // HTTP/2 requests may stream a body without announcing a length.
  if (!("socket" in req && req.httpVersionMajor === 1) && req.method !== "GET" && req.method !== "HEAD") {
    return { kind: "chunked" };
  }
  return { kind: "none" };
}

function rawResponse(status: number, reason: string, headers: Record<string, string | string[] | number>): string {
  const lines = [`HTTP/1.1 ${status} ${reason}`];
  for (const [name, value] of Object.entries(headers)) {
    for (const v of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${v}`);
  }
  return `${lines.join("\r\n")}\r\n\r\n`;
}

function writeRawError(socket: Duplex, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } });
  socket.end(
    rawResponse(status, status === 502 ? "Bad Gateway" : "Error", {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
      [PROXY_ERROR_HEADER]: code,
      connection: "close",
    }) + body,
  );
}

export interface SandboxProxyDeps {
  manager: Pick<SandboxManager, "proxyAddress">;
  logger: Logger;
  limits?: Partial<GuestPoolLimits>;
  /** How often pools of sandboxes that stopped, paused or moved are closed (default 1 s). */
  pruneIntervalMs?: number;
}

/**
 * The agent's proxy to guest ports over kept-alive connections (see GuestConnections). A sandbox's
 * connections are closed within `pruneIntervalMs` of it stopping or pausing, so a frozen or gone
 * guest holds no sockets and a resumed one on another address is never sent a request meant for
 * the old one.
 */
export class SandboxProxy {
  readonly #deps: SandboxProxyDeps;
  readonly connections: GuestConnections;
  readonly #prune: NodeJS.Timeout;

  constructor(deps: SandboxProxyDeps) {
    this.#deps = deps;
    this.connections = new GuestConnections(deps.limits);
    this.#prune = setInterval(() => this.prune(), deps.pruneIntervalMs ?? 1_000);
    this.#prune.unref();
  }

  /** Closes the connections of every sandbox the manager no longer routes to at the same address. */
  prune(): void {
    this.connections.retain((sandboxId) => {
      try {
        return this.#deps.manager.proxyAddress(sandboxId);
      } catch {
        return undefined;
      }
    });
  }

  close(): void {
    clearInterval(this.#prune);
    this.connections.close();
  }

  /** Relays one HTTP request to the guest and its answer back, streaming both bodies. */
  http(req: AnyRequest, res: AnyResponse, target: ProxyTarget): void {
    const resolved = resolveTarget(this.#deps.manager, target);
    if ("status" in resolved) {
      sendJsonError(res, resolved.status, resolved.code, resolved.message);
      return;
    }
    const body = requestBody(req);
    let exchange: GuestExchange | undefined;
    exchange = sendToGuest(
      {
        // A TLS port gets its own connection each time: the pool holds plain HTTP connections only.
        agent: guestTls(req.headers) ? false : this.connections.agentFor(target.sandboxId, resolved.address),
        host: resolved.address,
        port: target.port,
        hostHeader: guestHostHeader(req.headers),
        tls: guestTls(req.headers),
        method: req.method ?? "GET",
        path: target.path,
        headers: upstreamHeaders(req.headers),
        body,
      },
      body.kind === "none" ? undefined : (req as ClientBody),
      {
        onResponse: (response) => {
          try {
            res.writeHead(response.statusCode ?? 502, downstreamHeaders(response));
          } catch (err) {
            // Header names or values the client side refuses (HTTP/2 is stricter than HTTP/1.1).
            exchange?.abort();
            this.#failed(res, target, {
              code: "SANDBOX_BAD_RESPONSE",
              message: `the sandbox sent headers that cannot be relayed (${(err as NodeJS.ErrnoException).code ?? "invalid"})`,
            });
            return;
          }
          // Send the head now: a streamed answer (a code cell that prints nothing for a minute) must not
          // hold the client's headers back until its first byte, or the client's request timer fires.
          (res as Partial<ServerResponse>).flushHeaders?.();
          response.on("data", (chunk: Buffer) => {
            if (!(res as ServerResponse).write(chunk)) {
              response.pause();
              res.once("drain", () => response.resume());
            }
          });
          response.once("end", () => res.end());
          // The guest broke off mid-body: the client must see a broken response, not a short one.
          response.once("aborted", () => res.destroy());
          response.once("error", () => res.destroy());
        },
        onFailure: (failure) => this.#failed(res, target, failure),
      },
    );
    // The client went away before the answer was complete: stop talking to the guest, and do not
    // return a connection with a half-read answer to the pool.
    res.once("close", () => {
      if (!res.writableFinished) exchange?.abort();
    });
  }

  /** WebSocket (or any HTTP/1.1 upgrade): sends the request to the guest, then splices the sockets. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, target: ProxyTarget): void {
    const resolved = resolveTarget(this.#deps.manager, target);
    if ("status" in resolved) {
      writeRawError(socket, resolved.status, resolved.code, resolved.message);
      return;
    }
    const headers: Record<string, string | string[]> = {};
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i] ?? "";
      const lower = name.toLowerCase();
      if (lower === "host" || lower === "authorization" || lower === GUEST_AUTHORIZATION_HEADER) continue;
      if (lower === GUEST_HOST_HEADER || lower === GUEST_TLS_HEADER) continue;
      const value = req.rawHeaders[i + 1] ?? "";
      const existing = headers[lower];
      headers[lower] = existing === undefined ? value : [...(Array.isArray(existing) ? existing : [existing]), value];
    }
    const guestAuth = req.headers[GUEST_AUTHORIZATION_HEADER];
    if (typeof guestAuth === "string") headers.authorization = guestAuth;
    const exchange = sendToGuest(
      {
        // An upgraded connection leaves HTTP for good, so it never comes from or goes back to the pool.
        agent: false,
        host: resolved.address,
        port: target.port,
        hostHeader: guestHostHeader(req.headers),
        tls: guestTls(req.headers),
        method: req.method ?? "GET",
        path: target.path,
        headers,
        body: { kind: "none" },
      },
      undefined,
      {
        onUpgrade: (response, guest, guestHead) => {
          socket.write(rawResponse(101, response.statusMessage || "Switching Protocols", upgradeHeaders(response)));
          if (guestHead.length > 0) socket.write(guestHead);
          if (head.length > 0) guest.write(head);
          this.connections.addTunnel(target.sandboxId, resolved.address, guest);
          guest.pipe(socket);
          socket.pipe(guest);
          guest.once("error", () => socket.destroy());
          guest.once("close", () => socket.destroy());
          socket.once("close", () => guest.destroy());
        },
        onResponse: (response) => {
          // The guest declined the upgrade with an ordinary answer: pass it on and close.
          const headers: Record<string, string | string[] | number> = downstreamHeaders(response);
          headers.connection = "close";
          delete headers["content-length"];
          socket.write(rawResponse(response.statusCode ?? 502, response.statusMessage || "", headers));
          response.pipe(socket);
          response.once("aborted", () => socket.destroy());
        },
        onFailure: (failure) => {
          this.#warnUnlessClosed("proxy upgrade to the guest failed", target, failure);
          writeRawError(socket, 502, failure.code, this.#messageOf(target, failure));
        },
      },
    );
    socket.on("error", () => exchange.abort());
    socket.once("close", () => exchange.abort());
  }

  #failed(res: AnyResponse, target: ProxyTarget, failure: GuestFailure): void {
    this.#warnUnlessClosed("proxy upstream failed", target, failure);
    sendJsonError(res, 502, failure.code, this.#messageOf(target, failure));
  }

  /** Logs a failure to reach the guest; a port nobody listens on is the client's business, not a warning. */
  #warnUnlessClosed(message: string, target: ProxyTarget, failure: GuestFailure): void {
    if (failure.code === "PORT_NOT_OPEN") return;
    this.#deps.logger.warn(message, {
      sandboxId: target.sandboxId,
      port: target.port,
      reason: failure.code,
      err: failure.message,
    });
  }

  #messageOf(target: ProxyTarget, failure: GuestFailure): string {
    return failure.code === "PORT_NOT_OPEN"
      ? `port is not open: ${target.port} in sandbox ${target.sandboxId}`
      : `sandbox ${target.sandboxId} port ${target.port}: ${failure.message}`;
  }
}

/** The headers of a guest's 101, as the client gets them (Connection and Upgrade kept: they are the point). */
function upgradeHeaders(response: IncomingMessage): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(response.headers)) {
    if (value === undefined || name === PROXY_ERROR_HEADER) continue;
    if (HOP_BY_HOP.has(name) && name !== "connection" && name !== "upgrade") continue;
    headers[name] = value;
  }
  return headers;
}

import { Agent, type ClientRequest, request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { connect, isIP, type NetConnectOpts, type Socket } from "node:net";
import type { Duplex } from "node:stream";

/**
 * The HTTP/1.1 leg from the agent to a guest port, on Node's HTTP client (llhttp parses the guest's
 * answer) with one keep-alive connection pool per sandbox. A guest controls every byte it answers, so
 * everything that is not a well-formed HTTP/1.1 response with a final status of 200–599 becomes a
 * `GuestFailure` the proxy turns into its own 502, never something passed on to the client.
 */

/** Bounds on the connections the agent keeps to one guest. */
export interface GuestPoolLimits {
  /** Connections open to one sandbox at once; requests beyond wait for a free one. */
  maxSockets: number;
  /** Idle connections kept per sandbox for reuse. */
  maxFreeSockets: number;
  /** An idle connection is closed after this long (sooner when the guest's Keep-Alive header says so). */
  idleTimeoutMs: number;
}

export const DEFAULT_GUEST_POOL_LIMITS: GuestPoolLimits = {
  maxSockets: 128,
  maxFreeSockets: 16,
  idleTimeoutMs: 30_000,
};

/** The largest response head accepted from a guest (Node's default is 16 KiB; some apps send big cookies). */
export const MAX_GUEST_HEAD_BYTES = 64 * 1024;

/**
 * Reads from guests land here, up to 1 MiB at a time; each read is copied out before the next, so one
 * buffer serves every connection. Node reads a socket 64 KiB at a time otherwise, and on a large
 * download the per-read cost (parser callback, stream push, write to the client) was most of the
 * agent's CPU: 1 MiB reads cut it to about the cost of the bytes.
 */
const readBuffer = Buffer.allocUnsafe(1024 * 1024);

/** A connection to a guest whose reads are up to 1 MiB; the HTTP client parses them as usual. */
function connectWithLargeReads(options: NetConnectOpts): Socket {
  const socket: Socket = connect({
    ...options,
    onread: {
      buffer: readBuffer,
      // Pushed into the socket's readable side, where the HTTP client reads it; false (the reader is
      // full) stops reading until the reader asks for more, which is ordinary stream backpressure.
      callback: (bytes, buffer) => {
        const view = buffer.subarray(0, bytes);
        // A flowing socket with nothing buffered hands the chunk to its "data" listener, the HTTP
        // client's parser, before push() returns; the parser copies what it keeps (body pieces,
        // header text), so the shared buffer may be read into again. Otherwise the chunk waits in
        // the socket's buffer and must be a copy.
        return socket.push(socket.readableFlowing === true && socket.readableLength === 0 ? view : Buffer.from(view));
      },
    },
  } as NetConnectOpts);
  return socket;
}

/** Pools closed by `drop`: a request that failed because its pool was closed is not sent again. */
const droppedAgents = new WeakSet<Agent>();

interface GuestEntry {
  address: string;
  agent: Agent;
  /** Spliced WebSocket (upgrade) connections, closed with the pool. */
  tunnels: Set<Duplex>;
}

/**
 * The agent's connections to guests, one `http.Agent` per sandbox so that one guest can neither take
 * every connection nor be handed a socket that belongs to another. `drop` closes all of a sandbox's
 * connections, idle and busy, and its tunnels; the proxy calls it when the sandbox stops, pauses or
 * moves to another address.
 */
export class GuestConnections {
  readonly #limits: GuestPoolLimits;
  readonly #guests = new Map<string, GuestEntry>();

  constructor(limits: Partial<GuestPoolLimits> = {}) {
    this.#limits = { ...DEFAULT_GUEST_POOL_LIMITS, ...limits };
  }

  /** The pool for `sandboxId` at `address`; a pool for an older address of the same sandbox is dropped. */
  agentFor(sandboxId: string, address: string): Agent {
    return this.#entry(sandboxId, address).agent;
  }

  /** Keeps track of a spliced upgrade connection so `drop` can close it; forgotten when it closes. */
  addTunnel(sandboxId: string, address: string, socket: Duplex): void {
    const { tunnels } = this.#entry(sandboxId, address);
    tunnels.add(socket);
    socket.once("close", () => tunnels.delete(socket));
  }

  /** Closes every connection to a sandbox (idle, in use and tunnels). */
  drop(sandboxId: string): void {
    const entry = this.#guests.get(sandboxId);
    if (entry === undefined) return;
    this.#guests.delete(sandboxId);
    droppedAgents.add(entry.agent);
    entry.agent.destroy();
    for (const socket of entry.tunnels) socket.destroy();
  }

  /** Drops every sandbox for which `current(sandboxId)` no longer returns the address its pool was made for. */
  retain(current: (sandboxId: string) => string | undefined): void {
    for (const [sandboxId, entry] of this.#guests) {
      if (current(sandboxId) !== entry.address) this.drop(sandboxId);
    }
  }

  /** Open connections per sandbox, for tests and metrics. */
  stats(): Map<string, { open: number; idle: number; tunnels: number }> {
    const out = new Map<string, { open: number; idle: number; tunnels: number }>();
    for (const [sandboxId, { agent, tunnels }] of this.#guests) {
      const count = (pool: NodeJS.ReadOnlyDict<unknown[]>) =>
        Object.values(pool).reduce((n, list) => n + (list?.length ?? 0), 0);
      out.set(sandboxId, { open: count(agent.sockets), idle: count(agent.freeSockets), tunnels: tunnels.size });
    }
    return out;
  }

  close(): void {
    for (const sandboxId of [...this.#guests.keys()]) this.drop(sandboxId);
  }

  #entry(sandboxId: string, address: string): GuestEntry {
    const existing = this.#guests.get(sandboxId);
    if (existing !== undefined && existing.address === address) return existing;
    if (existing !== undefined) this.drop(sandboxId);
    const agent = new Agent({
      keepAlive: true,
      maxSockets: this.#limits.maxSockets,
      maxFreeSockets: this.#limits.maxFreeSockets,
      // Applies to idle sockets only: Node's agent destroys a free socket on timeout and merely
      // reports it on a busy one, so a long download or a quiet event stream is not cut.
      timeout: this.#limits.idleTimeoutMs,
      // The most recently used connection is the one least likely to have been closed by the guest.
      scheduling: "lifo",
    });
    Object.assign(agent, { createConnection: connectWithLargeReads });
    const entry: GuestEntry = { address, agent, tunnels: new Set() };
    this.#guests.set(sandboxId, entry);
    return entry;
  }
}

/** Why a guest exchange produced no usable response head. */
export type GuestFailureCode = "PORT_NOT_OPEN" | "SANDBOX_BAD_RESPONSE" | "UPSTREAM_ERROR";

export interface GuestFailure {
  code: GuestFailureCode;
  message: string;
}

/** One request to a guest. */
export interface GuestRequest {
  agent: Agent | false;
  host: string;
  port: number;
  /** The Host header the guest gets; default `<host>:<port>`. */
  hostHeader?: string | undefined;
  /**
   * Speak TLS to the guest's port (E2B's `httpsPorts`). The guest's certificate is not verified: the
   * guest is already the party being reached, and its servers use self-signed certificates.
   */
  tls?: boolean;
  method: string;
  path: string;
  /** Headers to send, without hop-by-hop ones; Host and the body framing are set here. */
  headers: Record<string, string | string[]>;
  /** `length`: the body has this Content-Length; `chunked`: unknown length; `none`: no body. */
  body: { kind: "length"; bytes: number } | { kind: "chunked" } | { kind: "none" };
}

export interface GuestExchangeHandlers {
  /** A final response with a status of 200–599 arrived; its body is `response`'s readable side. */
  onResponse(response: IncomingMessage): void;
  /** No usable response head (refused, broken, or malformed); the connection is already closed. */
  onFailure(failure: GuestFailure): void;
  /** The guest accepted an upgrade (101); the socket is the guest's side of the tunnel. */
  onUpgrade?(response: IncomingMessage, socket: Duplex, head: Buffer): void;
}

/** Whether a guest's final status may be passed on: HTTP statuses the client's `Response` can carry. */
export function isRelayableStatus(status: number | undefined): status is number {
  return status !== undefined && status >= 200 && status <= 599;
}

/** A network error before the response head, as the proxy reports it. */
export function classifyGuestError(err: NodeJS.ErrnoException): GuestFailure {
  if (err.code === "ECONNREFUSED") return { code: "PORT_NOT_OPEN", message: "port is not open" };
  // llhttp's errors (HPE_INVALID_CONSTANT, HPE_INVALID_STATUS, HPE_HEADER_OVERFLOW, duplicate
  // Content-Length…): the guest answered something that is not HTTP/1.1.
  if (err.code?.startsWith("HPE_")) {
    return { code: "SANDBOX_BAD_RESPONSE", message: `the sandbox sent a malformed HTTP response (${err.code})` };
  }
  return { code: "UPSTREAM_ERROR", message: `the guest connection failed (${err.code ?? err.message})` };
}

/** Errors that mean a reused keep-alive connection had been closed by the guest before the request reached it. */
const STALE_CONNECTION_CODES = new Set(["ECONNRESET", "EPIPE", "ECONNABORTED"]);

/** A running exchange with a guest. */
export interface GuestExchange {
  /** Abandons the exchange: the connection is closed, never returned to the pool. */
  abort(): void;
}

/** The client's request body as the relay reads it (an IncomingMessage or an HTTP/2 request). */
export type ClientBody = NodeJS.ReadableStream & { complete?: boolean };

/**
 * Sends a request to a guest, streaming `body` (the client's request) into it with backpressure, and
 * reports the answer. A request without a body that fails on a reused idle connection (the guest
 * closed it as the request went out) is sent once more on a new connection; a request with a body
 * cannot be replayed, so its failure is reported as it is. A client body that ends early (the client
 * went away) aborts the exchange, so the guest never sees a complete-looking body.
 */
export function sendToGuest(
  request: GuestRequest,
  body: ClientBody | undefined,
  handlers: GuestExchangeHandlers,
): GuestExchange {
  const headers: Record<string, string | string[]> = {
    ...request.headers,
    host: request.hostHeader ?? `${request.host}:${request.port}`,
  };
  if (request.body.kind === "length") headers["content-length"] = String(request.body.bytes);
  if (request.body.kind === "chunked") headers["transfer-encoding"] = "chunked";
  const upgrade = handlers.onUpgrade !== undefined;
  let current: ClientRequest;
  let aborted = false;

  const attempt = (retried: boolean): ClientRequest => {
    const options = {
      host: request.host,
      port: request.port,
      method: request.method,
      path: request.path,
      headers,
      agent: request.agent,
      maxHeaderSize: MAX_GUEST_HEAD_BYTES,
      // The Host header above is the one the guest gets; keep Node from adding its own.
      setHost: false,
    };
    const serverName = (request.hostHeader ?? "").replace(/:\d+$/, "");
    const req = request.tls
      ? httpsRequest({
          ...options,
          agent: false,
          rejectUnauthorized: false,
          // SNI carries a name, never an address (RFC 6066).
          ...(serverName && isIP(serverName.replace(/^\[|\]$/g, "")) === 0 ? { servername: serverName } : {}),
        })
      : httpRequest(options);
    current = req;
    let settled = false;
    req.on("error", (err: NodeJS.ErrnoException) => {
      if (settled || aborted) return;
      settled = true;
      const replayable =
        request.body.kind === "none" &&
        !upgrade &&
        !retried &&
        request.agent !== false &&
        !droppedAgents.has(request.agent);
      if (replayable && req.reusedSocket && err.code !== undefined && STALE_CONNECTION_CODES.has(err.code)) {
        attempt(true);
        return;
      }
      handlers.onFailure(classifyGuestError(err));
    });
    req.on("response", (response) => {
      if (settled || aborted) return;
      settled = true;
      if (!isRelayableStatus(response.statusCode)) {
        // A status no client can be given (1xx as a final answer, 600–999): the connection is in an
        // unknown state, so it is closed rather than returned to the pool.
        req.destroy();
        handlers.onFailure({
          code: "SANDBOX_BAD_RESPONSE",
          message: `the sandbox answered with status ${response.statusCode ?? "none"}, which is not a valid HTTP status`,
        });
        return;
      }
      handlers.onResponse(response);
    });
    if (upgrade) {
      req.on("upgrade", (response, socket, head) => {
        if (settled || aborted) {
          socket.destroy();
          return;
        }
        settled = true;
        handlers.onUpgrade?.(response, socket, head);
      });
    }
    if (request.body.kind === "none" || body === undefined) req.end();
    return req;
  };

  current = attempt(false);
  if (request.body.kind !== "none" && body !== undefined) {
    const first = current;
    body.pipe(first);
    // "close" without the whole body read means the client aborted its upload.
    body.once("close", () => {
      if (body.complete === false) first.destroy();
    });
    body.once("error", () => first.destroy());
  }
  return {
    abort: () => {
      aborted = true;
      current.destroy();
    },
  };
}

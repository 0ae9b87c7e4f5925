import { createHash, timingSafeEqual } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import {
  createServer as createHttp2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type ServerHttp2Session,
} from "node:http2";
import { createServer as createNetServer, type Server, type Socket } from "node:net";
import { Duplex } from "node:stream";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { HostAgentService } from "../proto/gen/hostagent/v1/hostagent_pb.js";
import type { AgentConfig } from "./config.js";
import { errorInterceptor } from "./error-map.js";
import { hostAgentHandlers } from "./handlers/host-agent.js";
import type { HostInventory } from "./host-inventory.js";
import type { Logger } from "./logger.js";
import type { AgentMetrics } from "./metrics.js";
import { PROXY_PREFIX, parseProxyUrl, SandboxProxy, sendJsonError } from "./proxy.js";
import type { SandboxManager } from "./sandboxes/manager.js";

/**
 * One listener for everything: Connect (HostAgentService), /proxy, /health and /metrics, over HTTP/1.1
 * and h2c on the same port (a connection that opens with the HTTP/2 preface goes to the HTTP/2
 * server), or over TLS with ALPN choosing h2 or http/1.1 when a certificate is configured.
 */

export interface ServerDeps {
  config: AgentConfig;
  logger: Logger;
  manager: SandboxManager;
  inventory: HostInventory;
  metrics: AgentMetrics;
  token: string;
}

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** Constant-time bearer check: both sides hashed first so lengths never leak through timing. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const presented = header?.startsWith("Bearer ") ? header.slice(7) : "";
  const a = createHash("sha256").update(presented).digest();
  const b = createHash("sha256").update(token).digest();
  return timingSafeEqual(a, b) && presented !== "";
}

/** A duplex over `socket` whose readable side starts with `first` (bytes already read from it). */
function replaying(socket: Socket, first: Buffer): Duplex {
  const duplex = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      socket.write(chunk, callback);
    },
    final(callback) {
      socket.end(callback);
    },
    destroy(err, callback) {
      socket.destroy(err ?? undefined);
      callback(err);
    },
  });
  duplex.push(first);
  socket.on("data", (data: Buffer) => {
    if (!duplex.push(data)) socket.pause();
  });
  socket.on("end", () => duplex.push(null));
  socket.on("error", (err) => duplex.destroy(err));
  socket.on("close", () => duplex.destroy());
  return duplex;
}

/**
 * Closes an HTTP/2 connection that has carried no stream for `idleMs`, as keepAliveTimeout does for
 * HTTP/1.1. A connection with an open stream (an exec or a watch that is quiet for a while) stays.
 */
function closeWhenIdle(session: ServerHttp2Session, idleMs: number): void {
  let open = 0;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => session.close(), idleMs);
    timer.unref();
  };
  session.on("stream", (stream) => {
    open += 1;
    clearTimeout(timer);
    stream.once("close", () => {
      open -= 1;
      if (open === 0) arm();
    });
  });
  session.once("close", () => clearTimeout(timer));
  arm();
}

export interface AgentServer {
  /** The port actually bound (useful with port 0). */
  port: number;
  close(): Promise<void>;
}

export async function startServer(deps: ServerDeps): Promise<AgentServer> {
  const { config, logger, manager, metrics, token } = deps;
  const limits = config.http;
  const proxy = new SandboxProxy({ manager, logger });
  const connect = connectNodeAdapter({
    routes: (router: ConnectRouter) => router.service(HostAgentService, hostAgentHandlers(deps)),
    interceptors: [errorInterceptor(logger)],
    // Exec output and files are bounded at 16 MiB; leave room for the envelope.
    readMaxBytes: 17 * 2 ** 20,
    writeMaxBytes: 40 * 2 ** 20,
  });

  const handle = (req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) => {
    const url = req.url ?? "/";
    if (url === "/health" && req.method === "GET") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ status: "ok" }));
      return;
    }
    if (!bearerMatches(req.headers.authorization, token)) {
      sendJsonError(res, 401, "UNAUTHENTICATED", "missing or wrong bearer token");
      return;
    }
    if (url === "/metrics" && req.method === "GET") {
      const load = manager.load();
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4" });
      res.end(
        metrics.render({ byStatus: manager.countsByStatus(), slotsInUse: load.slotsInUse, capacity: config.capacity }),
      );
      return;
    }
    if (url.startsWith(PROXY_PREFIX)) {
      const target = parseProxyUrl(url);
      if (target === undefined || !("port" in target)) {
        sendJsonError(res, 400, target?.reason ?? "INVALID_PROXY_PATH", target?.message ?? "bad proxy path");
        return;
      }
      proxy.http(req, res, target);
      return;
    }
    (connect as (req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) => void)(
      req,
      res,
    );
  };

  const http1 = createHttpServer(
    {
      // Bounds the time to *receive* a request (head and body); answers may take as long as they
      // need (Exec up to its own timeout, creates, event streams), so long calls are not cut.
      requestTimeout: limits.requestTimeoutMs,
      headersTimeout: limits.headersTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      // Node checks the two timeouts above on this interval; keep it a fraction of the shorter one.
      connectionsCheckingInterval: Math.max(100, Math.min(30_000, Math.floor(limits.headersTimeoutMs / 4))),
    },
    handle,
  );
  // Node starts tracking a server's connections (what enforces the two timeouts above and what
  // closeAllConnections closes) when the server emits "listening". This one never listens: the
  // listener below hands it connections, so without this the timeouts were never applied.
  http1.emit("listening");
  http1.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const target = parseProxyUrl(req.url ?? "");
    if (!bearerMatches(req.headers.authorization, token) || target === undefined || !("port" in target)) {
      socket.end("HTTP/1.1 401 Unauthorized\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
      return;
    }
    proxy.upgrade(req, socket, head, target);
  });
  const http2 = createHttp2Server({ maxSessionMemory: 64 }, handle);
  http2.on("session", (session) => closeWhenIdle(session, limits.keepAliveTimeoutMs));

  const open = new Set<Socket>();
  const dispatch = (socket: Socket) => {
    open.add(socket);
    socket.once("close", () => open.delete(socket));
    // A plain net/tls listener leaves Nagle's algorithm on (http.createServer turns it off): a unary
    // Connect answer written as headers then body then waited for the client's delayed ACK, which
    // added milliseconds to every Exec.
    socket.setNoDelay(true);
    if ((socket as TLSSocket).alpnProtocol === undefined) {
      // Plain TCP: peek at the first bytes to tell h2c (prior knowledge) from HTTP/1.1. A client that
      // sends nothing gets the headers timeout, as one that sends half a head would.
      const silent = () => socket.destroy();
      socket.setTimeout(limits.headersTimeoutMs, silent);
      socket.on("error", () => socket.destroy());
      socket.once("data", (chunk: Buffer) => {
        socket.setTimeout(0);
        socket.off("timeout", silent);
        socket.pause();
        const n = Math.min(chunk.length, H2_PREFACE.length);
        if (n >= 3 && chunk.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) {
          // Node's HTTP/2 session reads the socket's native handle and would miss the peeked bytes,
          // so it gets a JS stream that replays them first.
          http2.emit("connection", replaying(socket, chunk));
        } else {
          socket.unshift(chunk);
          http1.emit("connection", socket);
          socket.resume();
        }
      });
      return;
    }
    ((socket as TLSSocket).alpnProtocol === "h2" ? http2 : http1).emit("connection", socket);
  };

  let listener: Server;
  if (config.tls) {
    const [cert, key] = await Promise.all([readFile(config.tls.certFile), readFile(config.tls.keyFile)]);
    listener = createTlsServer(
      { cert, key, ALPNProtocols: ["h2", "http/1.1"], handshakeTimeout: limits.headersTimeoutMs },
      (socket) => dispatch(socket),
    );
  } else {
    listener = createNetServer((socket) => dispatch(socket));
  }
  // Beyond this many open connections, new ones are closed as they arrive.
  listener.maxConnections = limits.maxConnections;
  await new Promise<void>((resolve, reject) => {
    listener.once("error", reject);
    listener.listen(config.listen.port, config.listen.host, () => resolve());
  });
  const address = listener.address();
  const port = typeof address === "object" && address !== null ? address.port : config.listen.port;
  logger.info("agent listening", { host: config.listen.host, port, tls: config.tls !== undefined });
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        proxy.close();
        listener.close(() => resolve());
        http1.closeAllConnections();
        http2.close();
        // Upgraded tunnels and HTTP/2 sessions are no longer the HTTP servers' to close.
        for (const socket of open) socket.destroy();
      }),
  };
}

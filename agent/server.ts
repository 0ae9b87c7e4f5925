import { createHash, timingSafeEqual } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createHttp2Server, type Http2ServerRequest, type Http2ServerResponse } from "node:http2";
import type { Socket } from "node:net";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { context } from "@opentelemetry/api";
import { createDualListener, createDualTlsListener } from "../lib/dual-listener.js";
import { HostAgentService } from "../proto/gen/hostagent/v1/hostagent_pb.js";
import type { AgentConfig } from "./config.js";
import { errorInterceptor } from "./error-map.js";
import { type HostAgentHandlerDeps, hostAgentHandlers } from "./handlers/host-agent.js";
import type { ConnectionLogReader } from "./handlers/network.js";
import type { HostInventory } from "./host-inventory.js";
import { type Logger, requestLogFields, withLogContext } from "./logger.js";
import type { AgentMetrics } from "./metrics.js";
import { PROXY_PREFIX, parseProxyUrl, SandboxProxy, sendJsonError } from "./proxy.js";
import type { SandboxManager } from "./sandboxes/manager.js";
import { type AgentTracing, contextFromRequest, noopTracer, rpcTracingInterceptor } from "./tracing.js";

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
  /** The connection log the connection RPCs read (agent/egress/). */
  connections?: ConnectionLogReader;
  /** Samples and sandbox logs for PullTelemetry (agent/telemetry/). */
  telemetry?: HostAgentHandlerDeps["telemetry"];
  /** Template builds (agent/builds/). */
  builds?: HostAgentHandlerDeps["builds"];
  /** RPC spans (agent/tracing.ts); absent: no spans, but the RPC log line and traceparent pass-through remain. */
  tracing?: AgentTracing;
}

/** Constant-time bearer check: both sides hashed first so lengths never leak through timing. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const presented = header?.startsWith("Bearer ") ? header.slice(7) : "";
  const a = createHash("sha256").update(presented).digest();
  const b = createHash("sha256").update(token).digest();
  return timingSafeEqual(a, b) && presented !== "";
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
    // Tracing first (outermost), so its span and log line see the code errorInterceptor maps to.
    interceptors: [
      rpcTracingInterceptor(deps.tracing?.agent ?? noopTracer, logger, (method, code, seconds) =>
        metrics.rpc(method, code, seconds),
      ),
      errorInterceptor(logger),
    ],
    // Exec output and files are bounded at 16 MiB; leave room for the envelope.
    readMaxBytes: 17 * 2 ** 20,
    writeMaxBytes: 40 * 2 ** 20,
  });

  const route = (req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) => {
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

  // Every line logged while serving a request carries the edge's request id and trace id
  // (agent/logger.ts), and the edge's span (traceparent) is the active context, the RPC span's parent.
  const handle = (req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) =>
    withLogContext(requestLogFields(req.headers), () =>
      context.with(contextFromRequest(req.headers), () => route(req, res)),
    );

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
  const upgrade = (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const target = parseProxyUrl(req.url ?? "");
    if (!bearerMatches(req.headers.authorization, token) || target === undefined || !("port" in target)) {
      socket.end("HTTP/1.1 401 Unauthorized\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
      return;
    }
    proxy.upgrade(req, socket, head, target);
  };
  http1.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) =>
    withLogContext(requestLogFields(req.headers), () => upgrade(req, socket, head)),
  );
  const http2 = createHttp2Server({ maxSessionMemory: 64 }, handle);

  // HTTP/1.1 and h2c on one port (or TLS with ALPN choosing), shared with envd (lib/dual-listener.ts).
  // A connection that sends nothing gets the headers timeout, as one that sends half a head would.
  const bounds = {
    firstBytesTimeoutMs: limits.headersTimeoutMs,
    maxConnections: limits.maxConnections,
    h2IdleTimeoutMs: limits.keepAliveTimeoutMs,
  };
  const { server: listener, destroyConnections } = config.tls
    ? await createDualTlsListener(http1, http2, {
        ...bounds,
        tls: { cert: await readFile(config.tls.certFile), key: await readFile(config.tls.keyFile) },
      })
    : createDualListener(http1, http2, bounds);
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
        destroyConnections();
      }),
  };
}

import { writeFile } from "node:fs/promises";
import http from "node:http";
import type http2 from "node:http2";
import type net from "node:net";
import { networkInterfaces } from "node:os";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { createDualListener } from "../../lib/dual-listener.js";
import { Filesystem } from "../../proto/gen/envd/filesystem/filesystem_pb.js";
import { Process } from "../../proto/gen/envd/process/process_pb.js";
import { isOpenRoute, safeEqual, UNAUTHORIZED_MESSAGE } from "./auth.js";
import { createClockStepper } from "./clock.js";
import type { EnvdConfig } from "./config.js";
import { createExec, type Exec } from "./exec.js";
import { createFilesystemService } from "./filesystem/service.js";
import { PortForwarder } from "./forwarder.js";
import { detectGvisorHelper, startSudoDaemon } from "./gvisor.js";
import { type EnvdRequest, type EnvdResponse, header, jsonError, jsonReply } from "./http/common.js";
import { CpuSampler, getMetrics, postInit } from "./http/control.js";
import { getFile, postFiles, sendFilesError } from "./http/files.js";
import { type Logger, requestLogFields, withLogContext } from "./log.js";
import { ProcessManager } from "./process/manager.js";
import { createProcessService } from "./process/service.js";
import { EnvdState } from "./state.js";
import { serverTimingInterceptor } from "./timing.js";
import { ENVD_VERSION } from "./version.js";
import { createMetadataStore } from "./xattr.js";

/** Time a client has to send a request's head (and a new connection its first bytes). */
const ENVD_HEADERS_TIMEOUT_MS = 30_000;
/** Open connections envd serves at once; more are closed as they arrive (the agent pools at most 128 per guest). */
const ENVD_MAX_CONNECTIONS = 1024;

/** envd's own oom_score_adj in a guest: last to be killed. */
const ENVD_OOM_SCORE_ADJ = -900;
/** oom_score_adj for processes envd starts in a guest: the kernel's default weight. */
const CHILD_OOM_SCORE_ADJ = 0;

/** Headers browsers may read from envd's responses (Connect's, plus what E2B's envd exposes). */
const EXPOSED_HEADERS = [
  "Connect-Protocol-Version",
  "Connect-Timeout-Ms",
  "Connect-Content-Encoding",
  "Connect-Accept-Encoding",
  "Grpc-Status",
  "Grpc-Message",
  "Grpc-Status-Details-Bin",
  "Location",
  "Cache-Control",
  "X-Content-Type-Options",
  "Content-Range",
  "X-Envd-Version",
].join(", ");

/** A running envd. */
export interface Envd {
  /** The listening address (port resolved when 0 was asked for). */
  address: net.AddressInfo;
  state: EnvdState;
  processes: ProcessManager;
  forwarder: PortForwarder | undefined;
  /** Stops listening, ends open connections and streams, kills started processes. */
  close(): Promise<void>;
}

/** Optional overrides for tests. */
export interface EnvdDeps {
  logger: Logger;
  exec?: Exec;
  /** The environment envd was started with (read once here); process.env by default. */
  env?: NodeJS.ProcessEnv;
}

function eth0Address(): string | undefined {
  return networkInterfaces().eth0?.find((a) => a.family === "IPv4" && !a.internal)?.address;
}

function setCors(res: EnvdResponse): void {
  res.setHeader("access-control-allow-origin", "*");
  res.setHeader("access-control-expose-headers", EXPOSED_HEADERS);
}

/** Builds envd's request handler: CORS, the access-token gate, HTTP routes, then Connect for the rest. */
function createHandler(
  config: EnvdConfig,
  deps: Required<EnvdDeps>,
  state: EnvdState,
  processes: ProcessManager,
  shutdown: AbortSignal,
) {
  const { logger, exec } = deps;
  const metadata = createMetadataStore(exec, logger);
  const clock = createClockStepper({ debug: config.debug, exec, logger });
  const cpu = new CpuSampler();
  const filesDeps = { state, metadata, logger };

  const routes = (router: ConnectRouter) => {
    router.service(Process, createProcessService(processes, state));
    router.service(Filesystem, createFilesystemService({ state, metadata, logger }));
  };

  const httpRoutes = async (req: EnvdRequest, res: EnvdResponse, url: URL): Promise<void> => {
    const route = `${req.method} ${url.pathname}`;
    switch (route) {
      case "GET /health":
        res.writeHead(204, { "x-envd-version": ENVD_VERSION });
        res.end();
        return;
      case "POST /init":
        await postInit(req, res, { state, clock, logger });
        return;
      case "GET /envs":
        jsonReply(res, state.envVars);
        return;
      case "GET /metrics":
        await getMetrics(res, cpu);
        return;
      case "GET /wrenn/events": {
        // Wrenn's own route (E2B's envd has none): process starts and ends for the host agent.
        const after = Number(url.searchParams.get("after") ?? "0");
        jsonReply(res, processes.journal.since(Number.isSafeInteger(after) ? after : 0));
        return;
      }
      case "GET /files":
      case "HEAD /files":
        await getFile(req, res, url, filesDeps).catch((err) => sendFilesError(res, err, logger));
        return;
      case "POST /files":
        await postFiles(req, res, url, filesDeps).catch((err) => sendFilesError(res, err, logger));
        return;
      default:
        jsonError(res, 404, `no route for ${req.method} ${url.pathname}`);
    }
  };

  const connect = connectNodeAdapter({
    routes,
    shutdownSignal: shutdown,
    // Newer SDKs may send fields this envd does not know yet; ignore them rather than fail.
    jsonOptions: { ignoreUnknownFields: true },
    // The time envd spent, for the span the agent records of this call (agent/tracing.ts).
    interceptors: [serverTimingInterceptor],
    fallback: (req, nodeRes) => {
      // The adapter narrows the type of `write`; the object is the server's own response.
      const res = nodeRes as EnvdResponse;
      const url = new URL(req.url ?? "/", "http://envd");
      void httpRoutes(req, res, url).catch((err) => {
        logger.error("request failed", { route: `${req.method} ${url.pathname}`, err });
        jsonError(res, 500, "internal error");
      });
    },
  });

  const serve = (req: EnvdRequest, res: EnvdResponse) => {
    setCors(res);
    if (req.method === "OPTIONS") {
      res.writeHead(204, {
        "access-control-allow-methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
        "access-control-allow-headers": header(req, "access-control-request-headers") ?? "*",
        "access-control-max-age": "7200",
      });
      res.end();
      return;
    }
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    if (state.accessToken && !isOpenRoute(req.method ?? "", path)) {
      const presented = header(req, "x-access-token") ?? "";
      if (!safeEqual(presented, state.accessToken)) {
        jsonError(res, 401, UNAUTHORIZED_MESSAGE);
        return;
      }
    }
    connect(req, res);
  };
  // Every line logged while serving a request carries the request id the agent passed on.
  return (req: EnvdRequest, res: EnvdResponse) => withLogContext(requestLogFields(req.headers), () => serve(req, res));
}

/**
 * Starts envd: one TCP port serving HTTP/1.1 and h2c (told apart by the HTTP/2 preface), Connect
 * services `process.Process` and `filesystem.Filesystem` in JSON and binary, and the HTTP routes.
 */
export async function startEnvd(config: EnvdConfig, deps: EnvdDeps): Promise<Envd> {
  const full: Required<EnvdDeps> = {
    logger: deps.logger,
    exec: deps.exec ?? createExec(),
    env: deps.env ?? process.env,
  };
  const logger = full.logger;
  const state = new EnvdState(config);
  if (!config.debug) {
    // In a guest, a user's memory hog must not take envd (and with it the sandbox's control) down.
    await writeFile("/proc/self/oom_score_adj", String(ENVD_OOM_SCORE_ADJ)).catch((err) =>
      logger.warn("could not lower envd's OOM score", { err }),
    );
  }
  // On gVisor the agent's guest helper stands in for what this runsc's kernel lacks (gvisor.ts).
  const gvisorHelper = config.debug ? undefined : await detectGvisorHelper(full.env);
  if (gvisorHelper !== undefined) startSudoDaemon(gvisorHelper, logger);
  const processes = new ProcessManager(
    logger,
    () => state.envVars,
    config.debug ? undefined : CHILD_OOM_SCORE_ADJ,
    gvisorHelper,
  );
  const shutdown = new AbortController();
  const handler = createHandler(config, full, state, processes, shutdown.signal);

  // Uploads and client streams (process input) may last hours, and exec and watch streams are quiet
  // for as long as their process is: no whole-request timeout, only a deadline on each request's head.
  // The keep-alive timeout is longer than the agent's idle timeout on its pooled connections to envd
  // (30 s), so the agent, not envd, closes an idle connection and never reuses one envd is closing.
  const h1 = http.createServer(
    {
      requestTimeout: 0,
      headersTimeout: ENVD_HEADERS_TIMEOUT_MS,
      keepAliveTimeout: 65_000,
      connectionsCheckingInterval: 5_000,
    },
    handler,
  );
  // node:http2 is loaded with the first h2c connection: an idle envd that only ever sees HTTP/1.1
  // (the SDKs' file and RPC traffic) saves its memory.
  let h2: Promise<http2.Http2Server> | undefined;
  const h2Server = () => {
    h2 ??= import("node:http2").then((m) => m.createServer({}, handler));
    return h2;
  };
  // HTTP/1.1 and h2c on one port, shared with the agent (lib/dual-listener.ts).
  const { server: tcp, destroyConnections } = createDualListener(h1, h2Server, {
    firstBytesTimeoutMs: ENVD_HEADERS_TIMEOUT_MS,
    maxConnections: ENVD_MAX_CONNECTIONS,
  });
  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(config.port, config.host, () => {
      tcp.off("error", reject);
      resolve();
    });
  });
  const address = tcp.address() as net.AddressInfo;

  let forwarder: PortForwarder | undefined;
  const forwardAddress = config.forwardAddress ?? (config.debug ? undefined : eth0Address());
  if (forwardAddress) {
    forwarder = new PortForwarder({ address: forwardAddress, excludePorts: [address.port], intervalMs: 1_000, logger });
    forwarder.start();
  }
  logger.info("envd listening", {
    address: address.address,
    port: address.port,
    version: ENVD_VERSION,
    debug: config.debug,
  });

  return {
    address,
    state,
    processes,
    forwarder,
    async close() {
      shutdown.abort();
      forwarder?.stop();
      processes.killAll();
      await new Promise<void>((resolve) => {
        tcp.close(() => resolve());
        destroyConnections();
      });
      h1.close();
      void h2?.then((server) => server.close());
    },
  };
}

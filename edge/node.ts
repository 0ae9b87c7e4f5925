import { realpathSync } from "node:fs";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { type Http2Bindings, type HttpBindings, serve } from "@hono/node-server";
import { createApp } from "./app.js";
import { createAgentConnector } from "./clients/agent.js";
import type { App, AppDeps } from "./context.js";
import type { DatabaseHandle } from "./db/client.js";
import { type Env, edgeConfigFrom, parseEnv } from "./env.js";
import { codeToStatus, type ErrorCode } from "./errors/codes.js";
import { createConsoleLogger, type Logger } from "./logger.js";
import { EdgeMetrics } from "./middleware/metrics.js";
import type { EdgeObservability } from "./middleware/observe.js";
import { createAgentProxyFetch } from "./node/agent-proxy-fetch.js";
import { createPinnedAgentFetch } from "./node/agent-tls.js";
import { startCommandCallbackPoll } from "./node/command-callbacks.js";
import { nodeDashboardAssets } from "./node/dashboard-assets.js";
import { openNodeDatabase } from "./node/database.js";
import { nodeDocsAssets } from "./node/docs-assets.js";
import { resolveEncryptionKey } from "./node/encryption-key.js";
import { guardRelayedBodies } from "./node/relay-failures.js";
import { streamLargeBodies } from "./node/request-body.js";
import { attachSandboxUpgrades } from "./node/sandbox-upgrades.js";
import { readEdgeTlsFiles } from "./node/tls-files.js";
import { startNodeTracing } from "./node/tracing.js";
import { packageVersion } from "./node/version.js";
import { startNodeWebhookDeliveries } from "./node/webhook-delivery.js";
import { ensureAdminKey } from "./services/auth/bootstrap.js";
import { createServiceDeps, type ServiceContext, serviceContext } from "./services/context.js";
import { randomString } from "./services/ids.js";
import { type ReconcileLoop, startReconcileLoop } from "./services/reconcile/loop.js";
import { reconcileOptionsFromEnv } from "./services/reconcile/options.js";
import { runReconcileSweep } from "./services/reconcile/sweep.js";

/** A running Node edge. */
export interface NodeEdge {
  app: App;
  database: DatabaseHandle;
  /** The URL it listens on, e.g. `http://127.0.0.1:3000`. */
  url: string;
  port: number;
  /** The HTTPS URL when WRENN_TLS_CERT_FILE/KEY_FILE are set, e.g. `https://127.0.0.1:3443`. */
  tlsUrl?: string;
  tlsPort?: number;
  /** The admin key generated on first run (shown once), if one was. */
  generatedAdminKey?: string;
  /**
   * A ServiceContext on this edge's database and deps, for work done outside a request (`wrenn up`
   * registers its host and settles its sandboxes with it); `requestId` names the work in logs.
   */
  services(requestId: string): ServiceContext;
  close(): Promise<void>;
}

/** Options of `startNodeEdge`. */
export interface NodeEdgeOptions {
  /**
   * Settles once the database directory is prepared elsewhere (`wrenn up` initialises an empty PGlite
   * directory in a worker thread); the database is opened only after it, while the server already
   * answers `/health`. A rejection is ignored: opening the database then initialises the directory.
   */
  databasePrepared?: Promise<unknown>;
  /** Called with the URL as soon as the server listens, before the database is open. */
  onListening?: (url: string) => void;
}

/**
 * Bounds of the Node edge's listener. A client gets 30 s to send a request's head (slowloris), an
 * hour to send a whole request (uploads stream through to sandboxes and may be large; Node's default
 * of 5 minutes cut them), and an idle kept-alive connection is closed after 65 s (longer than the
 * usual 60 s idle timeout of a load balancer in front, so the balancer closes first). Answers are not
 * bounded here: exec streams and downloads last as long as they need.
 */
export const nodeEdgeServerLimits = {
  headersTimeout: 30_000,
  requestTimeout: 3_600_000,
  keepAliveTimeout: 65_000,
  connectionsCheckingInterval: 5_000,
} as const;

/** Open connections the Node edge accepts at once. */
export const NODE_EDGE_MAX_CONNECTIONS = 8_192;

/** The `/health` body while the database is still being opened: live, and saying what it waits for. */
export interface StartingHealth {
  status: "ok";
  version: string;
  starting: string[];
}

/**
 * Starts the edge on Node: opens PGlite (WRENN_DATA_DIR) or PostgreSQL (DATABASE_URL), applies
 * migrations, makes sure an admin key exists (printing a generated one once), and serves the API.
 *
 * The server listens before the database is open, so `GET /health` answers as soon as the process can
 * take requests (its body then lists `starting: ["database"]`); every other request waits until the
 * database is open and bootstrapped, then runs normally. Resolves once it is; if opening fails, the
 * server is closed, waiting requests get a 500, and the promise rejects.
 */
export async function startNodeEdge(
  env: Env,
  logger: Logger = createConsoleLogger(env.WRENN_LOG_LEVEL),
  options: NodeEdgeOptions = {},
): Promise<NodeEdge> {
  const pgliteDataDir = env.DATABASE_URL ? undefined : env.WRENN_DATA_DIR;
  const { key, generated } = await resolveEncryptionKey({
    configured: env.WRENN_ENCRYPTION_KEY,
    dataDir: pgliteDataDir,
  });
  if (generated) logger.info("generated an encryption key", { file: `${pgliteDataDir}/encryption.key` });
  const services = await createServiceDeps({
    encryptionKey: key,
    config: edgeConfigFrom(env),
    logger,
    // Transfers to sandboxes go over node:http rather than undici: see createAgentProxyFetch.
    // Hosts registered with a TLS pin or CA are reached through a verifying agent (node/agent-tls.ts).
    agents: createAgentConnector({ proxyFetch: createAgentProxyFetch(), pinnedFetch: createPinnedAgentFetch() }),
  });
  // Set once the database is open; no request reaches the app before then (see `fetch` below).
  let database: DatabaseHandle | undefined;
  const deps: AppDeps = {
    ...services,
    database: () => {
      if (!database) throw new Error("the database is not open yet");
      return { db: database.db, close: async () => {} };
    },
    docsAssets: nodeDocsAssets(),
    dashboardAssets: nodeDashboardAssets(),
    version: packageVersion(),
  };
  // Request spans go to OTEL_EXPORTER_OTLP_ENDPOINT when set (lib/tracing-node.ts); metrics to GET /metrics.
  const tracing = startNodeTracing({ endpoint: env.OTEL_EXPORTER_OTLP_ENDPOINT });
  const metrics = new EdgeMetrics();
  const observability: EdgeObservability = {
    metrics,
    tracer: tracing.tracerFor("wrenn-edge"),
    ...(env.WRENN_METRICS_TOKEN !== undefined ? { metricsToken: env.WRENN_METRICS_TOKEN } : {}),
  };
  const app = createApp(deps, observability);
  // Settles true once `database` is set, false if opening it failed; requests that came early wait on it.
  let settleOpened: (opened: boolean) => void = () => {};
  const openedOrFailed = new Promise<boolean>((resolve) => {
    settleOpened = resolve;
  });
  const startingHealth = (): Response =>
    Response.json({ status: "ok", version: deps.version ?? "dev", starting: ["database"] } satisfies StartingHealth);
  const databaseFailed = (): Response => {
    const code: ErrorCode = "INTERNAL_SERVER_ERROR";
    const requestId = `req_${randomString(20, "abcdefghijklmnopqrstuvwxyz0123456789")}`;
    const message = "the API could not open its database; see its log";
    return Response.json({ error: { code, message, requestId } }, { status: codeToStatus[code] });
  };
  // The Node bindings (`incoming`) go to the app as `c.env`: the auth middleware reads the client's
  // address from the socket there (sign-in limits, audit log).
  const fetch = (request: Request, bindings?: HttpBindings | Http2Bindings): Response | Promise<Response> => {
    if (database) return app.fetch(request, bindings);
    if (request.method === "GET" && new URL(request.url).pathname === "/health") return startingHealth();
    return openedOrFailed.then((opened) => (opened ? app.fetch(request, bindings) : databaseFailed()));
  };
  const handler = streamLargeBodies(guardRelayedBodies(fetch, logger));
  const tlsFiles =
    env.WRENN_TLS_CERT_FILE && env.WRENN_TLS_KEY_FILE
      ? readEdgeTlsFiles(env.WRENN_TLS_CERT_FILE, env.WRENN_TLS_KEY_FILE)
      : undefined;
  const server = serve({
    fetch: handler,
    port: env.WRENN_PORT,
    hostname: env.WRENN_HOST,
    serverOptions: nodeEdgeServerLimits,
  });
  // The same handler over HTTPS: what host-routed sandbox URLs (`<port>-<id>.<domain>`) need, since
  // the SDKs and browsers open them with https.
  const tlsServer = tlsFiles
    ? serve({
        fetch: handler,
        port: env.WRENN_TLS_PORT,
        hostname: env.WRENN_HOST,
        createServer: createHttpsServer,
        serverOptions: { ...nodeEdgeServerLimits, cert: tlsFiles.cert, key: tlsFiles.key },
      })
    : undefined;
  const servers = tlsServer ? [server, tlsServer] : [server];
  const closeServer = () =>
    Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())))).then(() => {});
  try {
    for (const s of servers) {
      // Beyond this many open connections, new ones are closed as they arrive.
      s.maxConnections = NODE_EDGE_MAX_CONNECTIONS;
      await new Promise<void>((resolve, reject) => {
        if (s.listening) resolve();
        s.once("listening", () => resolve());
        s.once("error", (err: NodeJS.ErrnoException) => {
          const variable = s === server ? "WRENN_PORT" : "WRENN_TLS_PORT";
          if (err.code === "EADDRINUSE") Object.assign(err, { message: `${err.message} (${variable})` });
          reject(err);
        });
      });
    }
  } catch (err) {
    await closeServer();
    throw err;
  }
  const port = (server.address() as AddressInfo).port;
  const host = env.WRENN_HOST === "0.0.0.0" || env.WRENN_HOST === "::" ? "127.0.0.1" : env.WRENN_HOST;
  const hostInUrl = host.includes(":") ? `[${host}]` : host;
  const url = `http://${hostInUrl}:${port}`;
  const tlsPort = tlsServer ? (tlsServer.address() as AddressInfo).port : undefined;
  const tlsUrl = tlsPort !== undefined ? `https://${hostInUrl}:${tlsPort}` : undefined;
  logger.info("edge listening", {
    url,
    ...(tlsUrl ? { tlsUrl, tlsNames: tlsFiles?.names } : {}),
    database: env.DATABASE_URL ? "postgres" : `pglite:${env.WRENN_DATA_DIR}`,
  });
  options.onListening?.(url);

  let opened: DatabaseHandle;
  let bootstrap: Awaited<ReturnType<typeof ensureAdminKey>>;
  try {
    await options.databasePrepared?.catch(() => {});
    opened = await openNodeDatabase(
      env.DATABASE_URL ? { databaseUrl: env.DATABASE_URL } : { pgliteDataDir: env.WRENN_DATA_DIR },
    );
    try {
      bootstrap = await ensureAdminKey(
        serviceContext(deps, { db: opened.db, requestId: "startup" }),
        env.WRENN_ADMIN_API_KEY,
      );
    } catch (err) {
      await opened.close();
      throw err;
    }
  } catch (err) {
    settleOpened(false);
    await closeServer();
    await tracing.shutdown();
    throw err;
  }
  metrics.watchDatabase(env.DATABASE_URL ? "node-postgres" : "pglite", opened.poolStats);
  database = opened;
  settleOpened(true);
  // WebSockets to sandbox ports: Node's upgrade event, since Hono's fetch cannot take over a socket.
  for (const s of servers) attachSandboxUpgrades(s, deps);
  // Reconcile sweep (DESIGN.md §5): every WRENN_RECONCILE_INTERVAL_SEC seconds; 0 turns it off.
  let reconcile: ReconcileLoop | undefined;
  if (env.WRENN_RECONCILE_INTERVAL_SEC > 0) {
    const sweepOptions = reconcileOptionsFromEnv(env);
    reconcile = startReconcileLoop({
      intervalMs: env.WRENN_RECONCILE_INTERVAL_SEC * 1000,
      logger,
      sweep: () =>
        metrics.observeSweep(() =>
          runReconcileSweep(serviceContext(deps, { db: opened.db, requestId: "reconcile" }), sweepOptions),
        ),
    });
  }
  // End of the reconcile wiring.
  // Webhook deliveries (docs/events-and-webhooks.md): their own loop, every WRENN_WEBHOOK_INTERVAL_MS; 0 turns it off.
  const webhookLoop =
    env.WRENN_WEBHOOK_INTERVAL_MS > 0
      ? startNodeWebhookDeliveries({
          intervalMs: env.WRENN_WEBHOOK_INTERVAL_MS,
          logger,
          context: () => serviceContext(deps, { db: opened.db, requestId: "webhooks" }),
          onAttempt: (outcome, seconds) => metrics.webhookDelivery(outcome, seconds),
        })
      : undefined;
  // Background commands owed a callback (docs/command-history.md): their hosts pulled every WRENN_COMMAND_CALLBACK_POLL_MS.
  const callbackPoll =
    env.WRENN_COMMAND_CALLBACK_POLL_MS > 0
      ? startCommandCallbackPoll({
          intervalMs: env.WRENN_COMMAND_CALLBACK_POLL_MS,
          logger,
          context: () => serviceContext(deps, { db: opened.db, requestId: "command-callbacks" }),
        })
      : undefined;
  const edge: NodeEdge = {
    app,
    database: opened,
    url,
    port,
    ...(tlsUrl !== undefined && tlsPort !== undefined ? { tlsUrl, tlsPort } : {}),
    services: (requestId) => serviceContext(deps, { db: opened.db, requestId }),
    close: async () => {
      await closeServer();
      await reconcile?.stop();
      await webhookLoop?.stop();
      await callbackPoll?.stop();
      await opened.close();
      await tracing.shutdown();
    },
  };
  if (bootstrap.secret) edge.generatedAdminKey = bootstrap.secret;
  return edge;
}

async function main(): Promise<void> {
  const parsed = parseEnv(process.env);
  if (!parsed.ok) {
    console.error("wrenn edge: invalid environment:");
    for (const [k, v] of Object.entries(parsed.errors)) console.error(`  ${k}: ${v}`);
    process.exit(1);
  }
  const edge = await startNodeEdge(parsed.env);
  if (edge.generatedAdminKey) {
    console.log(`\nAdmin API key (shown once, store it now):\n\n  ${edge.generatedAdminKey}\n`);
  }
  const stop = () => {
    edge.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}

const invokedDirectly = (() => {
  try {
    return (
      process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url))
    );
  } catch {
    return false;
  }
})();
if (invokedDirectly) {
  main().catch((err: unknown) => {
    console.error("wrenn edge failed to start:", err);
    process.exit(1);
  });
}

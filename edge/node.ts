import { realpathSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { serve } from "@hono/node-server";
import { createApp } from "./app.js";
import { createAgentConnector } from "./clients/agent.js";
import type { App, AppDeps } from "./context.js";
import type { DatabaseHandle } from "./db/client.js";
import { type Env, edgeConfigFrom, parseEnv } from "./env.js";
import { createConsoleLogger, type Logger } from "./logger.js";
import { openNodeDatabase } from "./node/database.js";
import { nodeDocsAssets } from "./node/docs-assets.js";
import { resolveEncryptionKey } from "./node/encryption-key.js";
import { attachSandboxUpgrades } from "./node/sandbox-upgrades.js";
import { packageVersion } from "./node/version.js";
import { ensureAdminKey } from "./services/auth/bootstrap.js";
import { createSecretBox } from "./services/crypto.js";
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
  /** The admin key generated on first run (shown once), if one was. */
  generatedAdminKey?: string;
  close(): Promise<void>;
}

/**
 * Starts the edge on Node: opens PGlite (WRENN_DATA_DIR) or PostgreSQL (DATABASE_URL), applies
 * migrations, makes sure an admin key exists (printing a generated one once), and serves the API.
 */
export async function startNodeEdge(
  env: Env,
  logger: Logger = createConsoleLogger(env.WRENN_LOG_LEVEL),
): Promise<NodeEdge> {
  const pgliteDataDir = env.DATABASE_URL ? undefined : env.WRENN_DATA_DIR;
  const { key, generated } = await resolveEncryptionKey({
    configured: env.WRENN_ENCRYPTION_KEY,
    dataDir: pgliteDataDir,
  });
  if (generated) logger.info("generated an encryption key", { file: `${pgliteDataDir}/encryption.key` });
  const secrets = await createSecretBox(key);
  const database = await openNodeDatabase(
    env.DATABASE_URL ? { databaseUrl: env.DATABASE_URL } : { pgliteDataDir: env.WRENN_DATA_DIR },
  );
  const config = edgeConfigFrom(env);
  const agents = createAgentConnector();
  const bootstrap = await ensureAdminKey(
    { db: database.db, agents, secrets, logger, requestId: "startup", config, now: () => new Date() },
    env.WRENN_ADMIN_API_KEY,
  );
  const deps: AppDeps = {
    database: () => ({ db: database.db, close: async () => {} }),
    agents,
    secrets,
    logger,
    config,
    docsAssets: nodeDocsAssets(),
    version: packageVersion(),
  };
  const app = createApp(deps);
  const server = serve({ fetch: app.fetch, port: env.WRENN_PORT, hostname: env.WRENN_HOST });
  // WebSockets to sandbox ports: Node's upgrade event, since Hono's fetch cannot take over a socket.
  attachSandboxUpgrades(server, deps);
  // Uploads stream through to sandboxes and may take longer than Node's default 5-minute limit on
  // receiving a request; slow clients are bounded by the headers timeout instead.
  if ("requestTimeout" in server) server.requestTimeout = 0;
  await new Promise<void>((resolve, reject) => {
    server.once("listening", () => resolve());
    server.once("error", reject);
  });
  const port = (server.address() as AddressInfo).port;
  const host = env.WRENN_HOST === "0.0.0.0" || env.WRENN_HOST === "::" ? "127.0.0.1" : env.WRENN_HOST;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  logger.info("edge listening", { url, database: env.DATABASE_URL ? "postgres" : `pglite:${env.WRENN_DATA_DIR}` });
  // Reconcile sweep (DESIGN.md §5): every WRENN_RECONCILE_INTERVAL_SEC seconds; 0 turns it off.
  let reconcile: ReconcileLoop | undefined;
  if (env.WRENN_RECONCILE_INTERVAL_SEC > 0) {
    const sweepOptions = reconcileOptionsFromEnv(env);
    reconcile = startReconcileLoop({
      intervalMs: env.WRENN_RECONCILE_INTERVAL_SEC * 1000,
      logger,
      sweep: () =>
        runReconcileSweep(
          { db: database.db, agents, secrets, logger, requestId: "reconcile", config, now: () => new Date() },
          sweepOptions,
        ),
    });
  }
  // End of the reconcile wiring.
  const edge: NodeEdge = {
    app,
    database,
    url,
    port,
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await reconcile?.stop();
      await database.close();
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

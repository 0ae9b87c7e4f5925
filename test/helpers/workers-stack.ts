import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { unstable_startWorker } from "wrangler";
import type { DatabaseHandle } from "../../edge/db/client.js";
import type { EdgeConfig } from "../../edge/env.js";
import { openNodeDatabase } from "../../edge/node/database.js";
import { createEdgeHarness, type EdgeHarness } from "./edge-app.js";
import { type PostgresServer, startPostgres } from "./postgres.js";
import { startWsProxy, type WsProxy } from "./wsproxy.js";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

type Worker = Awaited<ReturnType<typeof unstable_startWorker>>;

/** The edge in the real Workers runtime (workerd via wrangler) on a real PostgreSQL, through the Neon driver. */
export interface WorkersStack {
  pg: PostgresServer;
  /** The database from Node: migrated before the Worker starts (the Worker itself never runs DDL). */
  database: DatabaseHandle;
  /** A Node edge over the same database, when asked for (`nodeEdge`); it owns `database`. */
  node?: EdgeHarness;
  /** The WebSocket→TCP proxy the Neon driver reaches PostgreSQL through. */
  proxy: WsProxy;
  worker: Worker;
  /** WRENN_ADMIN_API_KEY, installed by the Worker. */
  adminKey: string;
  /** A JSON request to the Worker with `key` as x-api-key. */
  call(
    key: string,
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; retryAfter: string | null; json: Record<string, unknown> }>;
  /** Stops the Worker, the proxy, the database (or Node edge) and PostgreSQL, in that order. */
  close(): Promise<void>;
}

export interface WorkersStackOptions {
  /** Further plain-text bindings (WRENN_* settings) for the Worker. */
  bindings?: Record<string, string>;
  /** Serve `/__scheduled` so a test can fire the cron trigger. */
  testScheduled?: boolean;
  /** Also start a Node edge over the same database, with this config. */
  nodeEdge?: Partial<EdgeConfig>;
}

/** Starts PostgreSQL, migrates it from Node, then starts the Worker on it; cleans up what it started if a step fails. */
export async function startWorkersStack(options: WorkersStackOptions = {}): Promise<WorkersStack> {
  const adminKey = `wrn_workers_admin_${randomBytes(16).toString("hex")}`;
  const started: Array<() => Promise<void>> = [];
  const close = async () => {
    for (const stop of started.splice(0).reverse()) await stop();
  };
  try {
    const pg = await startPostgres();
    started.push(() => pg.stop());
    // What `npm run db:migrate` does before a deploy (a Node edge migrates when it opens the database).
    const node = options.nodeEdge
      ? await createEdgeHarness({ databaseUrl: pg.url, config: options.nodeEdge })
      : undefined;
    const database = node ? node.database : await openNodeDatabase({ databaseUrl: pg.url });
    started.push(() => (node ? node.close() : database.close()));
    const proxy = await startWsProxy([`127.0.0.1:${pg.port}`]);
    started.push(() => proxy.close());
    process.env.CLOUDFLARE_CF_FETCH_ENABLED = "false";
    process.env.WRANGLER_SEND_METRICS = "false";
    const bindings: Record<string, string> = {
      DATABASE_URL: pg.url,
      WRENN_ENCRYPTION_KEY: randomBytes(32).toString("hex"),
      WRENN_NEON_WSPROXY: proxy.address,
      WRENN_ADMIN_API_KEY: adminKey,
      WRENN_LOG_LEVEL: "warn",
      ...options.bindings,
    };
    const worker = await unstable_startWorker({
      config: `${repoRoot}wrangler.toml`,
      build: { nodejsCompatMode: "v2" },
      bindings: Object.fromEntries(
        Object.entries(bindings).map(([name, value]) => [name, { type: "plain_text" as const, value }]),
      ),
      dev: {
        server: { hostname: "127.0.0.1", port: 0 },
        inspector: false,
        watch: false,
        persist: false,
        logLevel: "warn",
        ...(options.testScheduled ? { testScheduled: true } : {}),
      },
    });
    started.push(() => worker.dispose());
    await worker.ready;
    const call: WorkersStack["call"] = async (key, method, path, body) => {
      const res = await worker.fetch(`http://edge.test${path}`, {
        method,
        headers: { "x-api-key": key, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const text = await res.text();
      return {
        status: res.status,
        retryAfter: res.headers.get("retry-after"),
        json: (text ? JSON.parse(text) : null) as Record<string, unknown>,
      };
    };
    return { pg, database, node, proxy, worker, adminKey, call, close };
  } catch (err) {
    await close();
    throw err;
  }
}

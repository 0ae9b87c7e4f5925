import type { ExecutionContext } from "hono";
import { createApp } from "./app.js";
import { type AgentConnector, createAgentConnector } from "./clients/agent.js";
import type { App } from "./context.js";
import type { DatabaseFactory } from "./db/client.js";
import { neonDatabase } from "./db/neon.js";
import { type EdgeConfig, type Env, edgeConfigFrom, parseEnv } from "./env.js";
import { createConsoleLogger, type Logger } from "./logger.js";
import { createSecretBox, type SecretBox } from "./services/crypto.js";
import { reconcileOptionsFromEnv } from "./services/reconcile/options.js";
import { runReconcileSweep } from "./services/reconcile/sweep.js";

/** What the Worker builds once per isolate and set of bindings. It holds no request state: the DB Pool is per request. */
interface WorkerDeps {
  env: Env;
  app: App;
  database: DatabaseFactory;
  agents: AgentConnector;
  secrets: SecretBox;
  logger: Logger;
  config: EdgeConfig;
}

/** The cron event wrangler passes to `scheduled` (only the fields we use). */
interface CronEvent {
  cron: string;
  scheduledTime: number;
}

let cached: { key: string; deps: Promise<WorkerDeps> } | undefined;

function depsFor(bindings: Record<string, unknown>): Promise<WorkerDeps> | { errors: Record<string, string> } {
  const parsed = parseEnv(bindings);
  if (!parsed.ok) return { errors: parsed.errors };
  const env = parsed.env;
  const key = JSON.stringify(env);
  if (cached?.key === key) return cached.deps;
  const deps = (async (): Promise<WorkerDeps> => {
    if (!env.DATABASE_URL) throw new Error("DATABASE_URL is required on Workers");
    if (!env.WRENN_ENCRYPTION_KEY) throw new Error("WRENN_ENCRYPTION_KEY is required on Workers");
    const database = neonDatabase({ connectionString: env.DATABASE_URL, wsProxy: env.WRENN_NEON_WSPROXY });
    const agents = createAgentConnector();
    const secrets = await createSecretBox(env.WRENN_ENCRYPTION_KEY);
    const logger = createConsoleLogger(env.WRENN_LOG_LEVEL);
    const config = edgeConfigFrom(env);
    const app = createApp({ database, agents, secrets, logger, config });
    return { env, app, database, agents, secrets, logger, config };
  })();
  // A failed start-up is not cached, so fixed bindings (or a transient failure) recover on the next event.
  deps.catch(() => {
    if (cached?.deps === deps) cached = undefined;
  });
  cached = { key, deps };
  return deps;
}

function badEnvironment(message: string, details?: Record<string, string>): Response {
  const body = { error: { code: "BAD_ENVIRONMENT", message, requestId: "none", ...(details ? { details } : {}) } };
  return Response.json(body, { status: 500 });
}

/**
 * Runs one reconcile sweep for a cron event, on a database Pool of its own that is closed when the
 * sweep ends (Neon: a Pool lives and dies within one event).
 */
async function sweep(event: CronEvent, deps: WorkerDeps, ctx: ExecutionContext): Promise<void> {
  const handle = deps.database();
  try {
    await runReconcileSweep(
      {
        db: handle.db,
        agents: deps.agents,
        secrets: deps.secrets,
        logger: deps.logger.child({ cron: event.cron }),
        requestId: "reconcile",
        config: deps.config,
        now: () => new Date(),
      },
      reconcileOptionsFromEnv(deps.env),
    );
  } finally {
    ctx.waitUntil(handle.close());
  }
}

// wrangler requires the handlers as the default export (biome.json allows it for this file).
export default {
  async fetch(request: Request, bindings: Record<string, unknown>, ctx: ExecutionContext): Promise<Response> {
    const deps = depsFor(bindings);
    if (!(deps instanceof Promise)) return badEnvironment("the Worker's environment is invalid", deps.errors);
    let app: App;
    try {
      app = (await deps).app;
    } catch (err) {
      return badEnvironment(err instanceof Error ? err.message : "the Worker could not start");
    }
    return app.fetch(request, bindings, ctx);
  },

  async scheduled(event: CronEvent, bindings: Record<string, unknown>, ctx: ExecutionContext): Promise<void> {
    const deps = depsFor(bindings);
    if (!(deps instanceof Promise)) {
      // Nobody reads a cron's return value; the log is where an operator sees it.
      console.error(JSON.stringify({ level: "error", msg: "invalid Worker environment", errors: deps.errors }));
      return;
    }
    await sweep(event, await deps, ctx);
  },
};

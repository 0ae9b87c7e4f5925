import type { ExecutionContext } from "hono";
import { createApp } from "./app.js";
import { createAgentConnector } from "./clients/agent.js";
import type { App } from "./context.js";
import { neonDatabaseFactory } from "./db/client.js";
import { edgeConfigFrom, parseEnv } from "./env.js";
import { createConsoleLogger } from "./logger.js";
import { createSecretBox } from "./services/crypto.js";

// wrangler requires a default export (biome allows it for this file). One app per isolate and set of bindings; it holds no request state (the DB Pool is per request).
let cached: { key: string; app: Promise<App> } | undefined;

function appFor(bindings: Record<string, unknown>): Promise<App> | { errors: Record<string, string> } {
  const parsed = parseEnv(bindings);
  if (!parsed.ok) return { errors: parsed.errors };
  const env = parsed.env;
  const key = JSON.stringify([
    env.DATABASE_URL,
    env.WRENN_ENCRYPTION_KEY,
    env.WRENN_MAX_UPLOAD_BYTES,
    env.WRENN_LOG_LEVEL,
  ]);
  if (cached?.key === key) return cached.app;
  const app = (async () => {
    if (!env.DATABASE_URL) throw new Error("DATABASE_URL is required on Workers");
    if (!env.WRENN_ENCRYPTION_KEY) throw new Error("WRENN_ENCRYPTION_KEY is required on Workers");
    return createApp({
      database: neonDatabaseFactory(env.DATABASE_URL),
      agents: createAgentConnector(),
      secrets: await createSecretBox(env.WRENN_ENCRYPTION_KEY),
      logger: createConsoleLogger(env.WRENN_LOG_LEVEL),
      config: edgeConfigFrom(env),
    });
  })();
  cached = { key, app };
  return app;
}

function badEnvironment(message: string, details?: Record<string, string>): Response {
  const body = { error: { code: "BAD_ENVIRONMENT", message, requestId: "none", ...(details ? { details } : {}) } };
  return Response.json(body, { status: 500 });
}

export default {
  async fetch(request: Request, bindings: Record<string, unknown>, ctx: ExecutionContext): Promise<Response> {
    const app = appFor(bindings);
    if (!(app instanceof Promise)) return badEnvironment("the Worker's environment is invalid", app.errors);
    try {
      return (await app).fetch(request, bindings, ctx);
    } catch (err) {
      return badEnvironment(err instanceof Error ? err.message : "the Worker could not start");
    }
  },
};

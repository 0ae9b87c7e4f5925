import type { ExecutionContext } from "hono";
import { createApp } from "./app.js";
import type { App } from "./context.js";
import type { DatabaseFactory } from "./db/client.js";
import { neonDatabase } from "./db/neon.js";
import { type Env, edgeConfigFrom, parseEnv } from "./env.js";
import { createConsoleLogger } from "./logger.js";
import { EdgeMetrics } from "./middleware/metrics.js";
import { ensureAdminKey } from "./services/auth/bootstrap.js";
import { createServiceDeps, type ServiceDeps, serviceContext } from "./services/context.js";
import { reconcileOptionsFromEnv } from "./services/reconcile/options.js";
import { runReconcileSweep } from "./services/reconcile/sweep.js";
import { runWebhookDeliveries } from "./services/webhooks/deliver.js";
import { noopTracer } from "./tracing.js";

/** What the Worker builds once per isolate and set of bindings. It holds no request state: the DB Pool is per request. */
interface WorkerDeps extends ServiceDeps {
  env: Env;
  app: App;
  database: DatabaseFactory;
  /** Whether WRENN_ADMIN_API_KEY is known to be installed in the database (checked once per isolate). */
  adminKeyInstalled: boolean;
  /** This isolate's metrics (GET /metrics shows one isolate's share). */
  metrics: EdgeMetrics;
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
    const services = await createServiceDeps({
      encryptionKey: env.WRENN_ENCRYPTION_KEY,
      config: edgeConfigFrom(env),
      logger: createConsoleLogger(env.WRENN_LOG_LEVEL),
    });
    // Workers pass the trace context on (traceparent to the agents) but export no spans of their own.
    const metrics = new EdgeMetrics();
    metrics.watchDatabase("neon-serverless");
    const app = createApp(
      { ...services, database },
      {
        metrics,
        tracer: noopTracer,
        ...(env.WRENN_METRICS_TOKEN !== undefined ? { metricsToken: env.WRENN_METRICS_TOKEN } : {}),
      },
    );
    return { ...services, env, app, database, adminKeyInstalled: !env.WRENN_ADMIN_API_KEY, metrics };
  })();
  // A failed start-up is not cached, so fixed bindings (or a transient failure) recover on the next event.
  deps.catch(() => {
    if (cached?.deps === deps) cached = undefined;
  });
  cached = { key, deps };
  return deps;
}

/**
 * Installs WRENN_ADMIN_API_KEY on the first event of an isolate (Node does this at start; a Worker
 * has no start). It runs on a Pool of the event's own, since Neon Pools may not cross requests, and
 * a failure (say, two isolates racing on the same key) only means the next event checks again.
 */
async function installAdminKey(deps: WorkerDeps, ctx: ExecutionContext): Promise<void> {
  const key = deps.env.WRENN_ADMIN_API_KEY;
  if (deps.adminKeyInstalled || !key) return;
  const handle = deps.database();
  try {
    await ensureAdminKey(serviceContext(deps, { db: handle.db, requestId: "bootstrap" }), key);
    deps.adminKeyInstalled = true;
  } catch (err) {
    deps.logger.warn("installing WRENN_ADMIN_API_KEY failed; retrying on the next request", { err });
  } finally {
    ctx.waitUntil(handle.close());
  }
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
    await deps.metrics.observeSweep(() =>
      runReconcileSweep(
        serviceContext(deps, {
          db: handle.db,
          requestId: "reconcile",
          logger: deps.logger.child({ requestId: "reconcile", cron: event.cron }),
        }),
        // Workers allow six simultaneous outgoing connections per event (more wait in a queue, eating
        // into per-host deadlines): one is the database's WebSocket, five are for agents.
        { ...reconcileOptionsFromEnv(deps.env), hostConcurrency: 5, actionConcurrency: 1 },
      ),
    );
  } finally {
    ctx.waitUntil(handle.close());
  }
}

/**
 * Sends the due webhook deliveries for a cron event (docs/events-and-webhooks.md), on a Pool of its
 * own; at most five at once, for the same connection budget as the sweep. Deliveries wait for the
 * next cron event, so on Workers their latency is the cron interval.
 */
async function deliverWebhooks(deps: WorkerDeps, ctx: ExecutionContext): Promise<void> {
  const handle = deps.database();
  try {
    await runWebhookDeliveries(serviceContext(deps, { db: handle.db, requestId: "webhooks" }), {
      concurrency: 5,
      onAttempt: (outcome, seconds) => deps.metrics.webhookDelivery(outcome, seconds),
    });
  } catch (err) {
    deps.logger.error("webhook delivery run failed", { err });
  } finally {
    ctx.waitUntil(handle.close());
  }
}

// wrangler requires the handlers as the default export (biome.json allows it for this file).
export default {
  async fetch(request: Request, bindings: Record<string, unknown>, ctx: ExecutionContext): Promise<Response> {
    const deps = depsFor(bindings);
    if (!(deps instanceof Promise)) return badEnvironment("the Worker's environment is invalid", deps.errors);
    let ready: WorkerDeps;
    try {
      ready = await deps;
    } catch (err) {
      return badEnvironment(err instanceof Error ? err.message : "the Worker could not start");
    }
    await installAdminKey(ready, ctx);
    return ready.app.fetch(request, bindings, ctx);
  },

  async scheduled(event: CronEvent, bindings: Record<string, unknown>, ctx: ExecutionContext): Promise<void> {
    const deps = depsFor(bindings);
    if (!(deps instanceof Promise)) {
      // Nobody reads a cron's return value; the log is where an operator sees it.
      console.error(JSON.stringify({ level: "error", msg: "invalid Worker environment", errors: deps.errors }));
      return;
    }
    const ready = await deps;
    try {
      await sweep(event, ready, ctx);
    } finally {
      // A failed sweep does not hold deliveries back.
      await deliverWebhooks(ready, ctx);
    }
  },
};

import { OpenAPIHono } from "@hono/zod-openapi";
import { bodyLimit } from "hono/body-limit";
import type { App, AppDeps, AppEnv } from "./context.js";
import { ApiError } from "./errors/api-error.js";
import { errorResponse, handleError, handleZodError } from "./errors/handle.js";
import { requireApiKey } from "./middleware/auth.js";
import { init } from "./middleware/init.js";
import { apiTraffic, defaultObservability, type EdgeObservability, observe } from "./middleware/observe.js";
import { sandboxProxy } from "./proxy/sandbox-proxy.js";
import { apiKeysRouter } from "./routes/api-keys/index.js";
import { auditRouter } from "./routes/audit/index.js";
import { authRouter } from "./routes/auth/index.js";
import { commandsRouter } from "./routes/commands/index.js";
import { dashboardRouter } from "./routes/dashboard/index.js";
import { docsRouter } from "./routes/docs/index.js";
import { e2bRouter } from "./routes/e2b/index.js";
import { eventsRouter } from "./routes/events/index.js";
import { healthRouter } from "./routes/health/index.js";
import { hostsRouter } from "./routes/hosts/index.js";
import { metricsRouter } from "./routes/metrics/index.js";
import { sandboxesRouter } from "./routes/sandboxes/index.js";
import { snapshotsRouter } from "./routes/snapshots/index.js";
import { teamsRouter } from "./routes/teams/index.js";
import { templatesRouter } from "./routes/templates/index.js";
import { webhooksRouter } from "./routes/webhooks/index.js";

/** Paths whose bodies are streamed and limited by their service, not by the JSON body limit. */
const streamedUploads = /\/files\/write$|^\/v1\/templates\/files\//;

/**
 * Builds the edge's Hono app from its dependencies. Node (`edge/node.ts`), Workers (`edge/worker.ts`)
 * and tests all call this; nothing here reads the environment or holds state between requests
 * (but the metrics in `observability`, which the entry point makes once).
 */
export function createApp(deps: AppDeps, observability: EdgeObservability = defaultObservability()): App {
  const app = new OpenAPIHono<AppEnv>({ defaultHook: handleZodError });
  app.openAPIRegistry.registerComponent("securitySchemes", "ApiKeyAuth", {
    type: "apiKey",
    in: "header",
    name: "X-API-Key",
  });
  app.openAPIRegistry.registerComponent("securitySchemes", "BearerAuth", { type: "http", scheme: "bearer" });

  app.use("*", init(deps));
  // Metrics and the request span; it tells sandbox-proxy answers apart by `apiTraffic` (see observe.ts).
  app.use("*", observe(observability));
  // Sandbox traffic (E2B routing headers, `<port>-<id>.<domain>` hosts, signed /files URLs) shares
  // this server with the API and is told apart before any API middleware runs.
  app.use("*", sandboxProxy());
  app.use("*", apiTraffic);
  app.onError(handleError);
  app.notFound((c) => errorResponse(c, "NOT_FOUND", `no route for ${c.req.method} ${c.req.path}`));

  const jsonLimit = bodyLimit({
    maxSize: deps.config.maxJsonBytes,
    onError: () => {
      throw new ApiError("PAYLOAD_TOO_LARGE", `the request body is larger than ${deps.config.maxJsonBytes} bytes`);
    },
  });
  // /v1/auth/* (sign-up, sign-in…) checks sessions itself; every other /v1 route needs a key or a session.
  app.use("/v1/*", requireApiKey("/v1/auth/"));
  // GET and HEAD requests cannot carry a body (Fetch spec), so they skip the limit: asking a Node
  // request for its body builds a full Request with an AbortController, which cost as much as the
  // rest of a GET /v1/sandboxes/{id}.
  app.use("/v1/*", async (c, next) =>
    c.req.method === "GET" || c.req.method === "HEAD" || streamedUploads.test(c.req.path) ? next() : jsonLimit(c, next),
  );

  app.route("/", healthRouter(deps.version ?? "dev"));
  app.route("/", metricsRouter(observability));
  app.route("/v1/sandboxes", sandboxesRouter());
  app.route("/v1/hosts", hostsRouter());
  app.route("/v1/api-keys", apiKeysRouter());
  app.route("/v1/teams", teamsRouter());
  app.route("/v1/snapshots", snapshotsRouter());
  app.route("/v1/templates", templatesRouter());
  app.route("/v1/auth", authRouter());
  app.route("/v1/audit", auditRouter());
  app.route("/v1/events", eventsRouter());
  app.route("/v1/webhooks", webhooksRouter());
  app.route("/", commandsRouter());
  app.route("/", e2bRouter());
  // The web dashboard under /dashboard (and GET / for browsers); no API path starts with it.
  app.route("/", dashboardRouter(deps.dashboardAssets));
  app.route("/", docsRouter(app, deps.docsAssets));
  return app;
}

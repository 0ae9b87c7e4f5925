import { OpenAPIHono } from "@hono/zod-openapi";
import { bodyLimit } from "hono/body-limit";
import { cors } from "hono/cors";
import type { App, AppEnv } from "../../context.js";
import { registerE2bEvents } from "../events/e2b.js";
import { requireE2bApiKey } from "./auth.js";
import { registerE2bConnectSandbox } from "./connect.js";
import { registerE2bCreateSandbox } from "./create.js";
import { e2bErrorResponse, handleE2bError, handleE2bZodError } from "./errors.js";
import { registerE2bGetSandbox } from "./get.js";
import { registerE2bKillSandbox } from "./kill.js";
import { registerE2bLegacyLifecycle } from "./legacy.js";
import { registerE2bLifecycle } from "./lifecycle.js";
import { registerE2bListSandboxes } from "./list.js";
import { registerE2bSandboxLogs } from "./logs.js";
import { registerE2bSandboxesMetrics, registerE2bSandboxMetrics } from "./metrics.js";
import { registerE2bUpdateSandboxNetwork } from "./network.js";
import { registerE2bSnapshots } from "./snapshots.js";
import { registerE2bTemplates } from "./templates.js";
import { registerE2bTemplateTags } from "./templates-tags.js";

/** Path patterns of the E2B surface; mounted at "/", so middleware is scoped to these, never to "*". */
const e2bPaths = [
  "/sandboxes",
  "/sandboxes/*",
  "/v2/sandboxes",
  "/v2/sandboxes/*",
  "/snapshots",
  "/templates",
  "/templates/*",
  "/v2/templates",
  "/v2/templates/*",
  "/v3/templates",
  "/events/*",
];

/** E2B operations the SDK can call that Wrenn does not offer: a clear 501 in E2B's shape, not a 404. */
const unsupported: Array<{ method: "get" | "post" | "put" | "delete"; path: string; what: string }> = [];

/**
 * E2B's control-plane REST API (the part the `e2b` SDK 2.x uses), mapped onto Wrenn's sandbox
 * services: same rows, same agent calls, E2B's shapes and error body `{code, message}`.
 */
export function e2bRouter(): App {
  const app = new OpenAPIHono<AppEnv>({ defaultHook: handleE2bZodError });
  app.onError(handleE2bError);
  for (const path of e2bPaths) {
    // Browsers may call E2B's API directly (the SDK supports it); the preflight needs no key.
    app.use(path, cors({ exposeHeaders: ["X-Next-Token", "X-Request-Id"], maxAge: 600 }));
    app.use(path, async (c, next) => {
      const maxSize = c.get("services").config.maxJsonBytes;
      return bodyLimit({
        maxSize,
        onError: (c) => e2bErrorResponse(c, 413, `the request body is larger than ${maxSize} bytes`),
      })(c, next);
    });
    app.use(path, requireE2bApiKey());
  }
  registerE2bCreateSandbox(app);
  registerE2bListSandboxes(app);
  registerE2bSandboxesMetrics(app);
  registerE2bGetSandbox(app);
  registerE2bKillSandbox(app);
  registerE2bLifecycle(app);
  registerE2bLegacyLifecycle(app);
  registerE2bConnectSandbox(app);
  registerE2bSandboxMetrics(app);
  registerE2bSandboxLogs(app);
  registerE2bUpdateSandboxNetwork(app);
  // Before the snapshots' DELETE /templates/{templateID}, which would take "tags" for an id.
  registerE2bTemplateTags(app);
  registerE2bSnapshots(app);
  registerE2bTemplates(app);
  registerE2bEvents(app);
  for (const { method, path, what } of unsupported) {
    app.on(method.toUpperCase(), path, (c) => e2bErrorResponse(c, 501, `${what} is not supported by Wrenn`));
  }
  return app;
}

import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { scoped } from "../../middleware/auth.js";
import { checkTimeout } from "../../services/e2b/create-input.js";
import { refreshE2bSandbox, resumeE2bSandbox } from "../../services/e2b/legacy.js";
import { E2bError, e2bErrorResponses } from "./errors.js";
import { E2bSandbox, SandboxIdParam } from "./schemas.js";
import { sandboxDomain, toE2bSandbox } from "./shape.js";

const RefreshBody = z.object({ duration: z.number().optional() }).openapi("E2bSandboxRefreshRequest");
const ResumeBody = z
  .object({ timeout: z.number().int().optional(), autoPause: z.boolean().optional() })
  .openapi("E2bResumedSandbox");

const refreshRoute = createRoute({
  method: "post",
  path: "/sandboxes/{sandboxID}/refreshes",
  tags: ["e2b"],
  operationId: "e2bRefreshSandbox",
  summary: "Keep a running sandbox alive for `duration` seconds more (E2B's keep-alive)",
  description: "15–3600 s (default 15); only ever extends the end time. A sandbox that is not running is not found.",
  ...scoped("sandboxes:write"),
  request: {
    params: SandboxIdParam,
    body: { required: false, content: { "application/json": { schema: RefreshBody } } },
  },
  responses: { 204: { description: "Kept alive" }, ...e2bErrorResponses },
});

const resumeRoute = createRoute({
  method: "post",
  path: "/sandboxes/{sandboxID}/resume",
  tags: ["e2b"],
  operationId: "e2bResumeSandbox",
  summary: "Resume a paused sandbox (E2B's older call; connect does the same)",
  description: "`timeout` seconds from now (default 15). A running sandbox answers 409.",
  ...scoped("sandboxes:write"),
  request: {
    params: SandboxIdParam,
    body: { required: false, content: { "application/json": { schema: ResumeBody } } },
  },
  responses: {
    201: { description: "Resumed", content: { "application/json": { schema: E2bSandbox } } },
    409: { description: "Already running", content: { "application/json": { schema: E2bError } } },
    ...e2bErrorResponses,
  },
});

/** POST /sandboxes/{sandboxID}/refreshes and the deprecated POST /sandboxes/{sandboxID}/resume */
export const registerE2bLegacyLifecycle = (app: App) => {
  app.openapi(refreshRoute, async (c) => {
    const { sandboxID } = c.req.valid("param");
    const body = c.req.valid("json") as { duration?: number } | undefined;
    await refreshE2bSandbox(c.get("team"), sandboxID, body?.duration);
    return c.body(null, 204);
  });
  app.openapi(resumeRoute, async (c) => {
    const { sandboxID } = c.req.valid("param");
    const body = c.req.valid("json") as { timeout?: number } | undefined;
    const timeoutSec = body?.timeout === undefined ? undefined : checkTimeout(body.timeout);
    const connected = await resumeE2bSandbox(c.get("team"), sandboxID, timeoutSec === undefined ? {} : { timeoutSec });
    const shaped = toE2bSandbox(
      connected.sandbox,
      connected.envdAccessToken,
      sandboxDomain(c),
      connected.trafficAccessToken,
    );
    return c.json(shaped, 201);
  });
};

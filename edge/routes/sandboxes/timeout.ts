import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { setSandboxTimeout } from "../../services/sandboxes/set-timeout.js";
import { Sandbox, SandboxIdParam, TimeoutBody } from "./schemas.js";

const sandboxResponse = (description: string) => ({
  200: { description, content: { "application/json": { schema: Sandbox } } },
  ...openApiErrorResponses,
  ...openApiAgentErrorResponses,
});

const timeoutRoute = createRoute({
  method: "post",
  path: "/{id}/timeout",
  tags: ["sandboxes"],
  operationId: "setSandboxTimeout",
  summary: "Set a sandbox's timeout",
  description: "Moves the end time to now + timeoutSec (0 removes it) and optionally changes the timeout action.",
  ...scoped("sandboxes:write"),
  request: {
    params: SandboxIdParam,
    body: { required: true, content: { "application/json": { schema: TimeoutBody } } },
  },
  responses: sandboxResponse("The sandbox with its new end time"),
});

/** POST /v1/sandboxes/{id}/timeout */
export const registerSetSandboxTimeout = (app: App) =>
  app.openapi(timeoutRoute, async (c) =>
    c.json(await setSandboxTimeout(c.get("team"), c.req.valid("param").id, c.req.valid("json")), 200),
  );

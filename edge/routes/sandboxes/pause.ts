import { createRoute, type z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { pauseSandbox } from "../../services/sandboxes/pause.js";
import { PauseBody, Sandbox, SandboxIdParam } from "./schemas.js";

const sandboxResponse = (description: string) => ({
  200: { description, content: { "application/json": { schema: Sandbox } } },
  ...openApiErrorResponses,
  ...openApiAgentErrorResponses,
});

const pauseRoute = createRoute({
  method: "post",
  path: "/{id}/pause",
  tags: ["sandboxes"],
  operationId: "pauseSandbox",
  summary: "Pause a running sandbox",
  description:
    "Paused time does not count against the timeout. Pausing a paused sandbox answers 409. With `keepMemory: false` only its files are kept.",
  ...scoped("sandboxes:write"),
  request: {
    params: SandboxIdParam,
    body: { required: false, content: { "application/json": { schema: PauseBody } } },
  },
  responses: sandboxResponse("The sandbox, paused"),
});

/** Response of pause, resume and timeout. */
export type SandboxResponse = z.infer<typeof Sandbox>;

/** POST /v1/sandboxes/{id}/pause */
export const registerPauseSandbox = (app: App) =>
  app.openapi(pauseRoute, async (c) => {
    const body = c.req.valid("json") as z.infer<typeof PauseBody> | undefined;
    return c.json(await pauseSandbox(c.get("team"), c.req.valid("param").id, { keepMemory: body?.keepMemory }), 200);
  });

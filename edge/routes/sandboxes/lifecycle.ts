import { createRoute, type z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { pauseSandbox } from "../../services/sandboxes/pause.js";
import { resumeSandbox } from "../../services/sandboxes/resume.js";
import { setSandboxTimeout } from "../../services/sandboxes/set-timeout.js";
import { apiKeySecurity } from "../router.js";
import { ResumeBody, Sandbox, SandboxIdParam, TimeoutBody } from "./schemas.js";

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
  description: "Paused time does not count against the timeout. Pausing a paused sandbox answers 409.",
  security: apiKeySecurity,
  request: { params: SandboxIdParam },
  responses: sandboxResponse("The sandbox, paused"),
});

const resumeRoute = createRoute({
  method: "post",
  path: "/{id}/resume",
  tags: ["sandboxes"],
  operationId: "resumeSandbox",
  summary: "Resume a paused sandbox",
  description: "Without `timeoutSec` the sandbox gets back the time it had left when it paused.",
  security: apiKeySecurity,
  request: { params: SandboxIdParam, body: { content: { "application/json": { schema: ResumeBody } } } },
  responses: sandboxResponse("The sandbox, running"),
});

const timeoutRoute = createRoute({
  method: "post",
  path: "/{id}/timeout",
  tags: ["sandboxes"],
  operationId: "setSandboxTimeout",
  summary: "Set a sandbox's timeout",
  description: "Moves the end time to now + timeoutSec (0 removes it) and optionally changes the timeout action.",
  security: apiKeySecurity,
  request: {
    params: SandboxIdParam,
    body: { required: true, content: { "application/json": { schema: TimeoutBody } } },
  },
  responses: sandboxResponse("The sandbox with its new end time"),
});

/** Response of pause, resume and timeout. */
export type SandboxResponse = z.infer<typeof Sandbox>;

/** POST /v1/sandboxes/{id}/pause */
export const registerPauseSandbox = (app: App) =>
  app.openapi(pauseRoute, async (c) => c.json(await pauseSandbox(c.get("team"), c.req.valid("param").id), 200));

/** POST /v1/sandboxes/{id}/resume */
export const registerResumeSandbox = (app: App) =>
  app.openapi(resumeRoute, async (c) =>
    c.json(await resumeSandbox(c.get("team"), c.req.valid("param").id, c.req.valid("json")), 200),
  );

/** POST /v1/sandboxes/{id}/timeout */
export const registerSetSandboxTimeout = (app: App) =>
  app.openapi(timeoutRoute, async (c) =>
    c.json(await setSandboxTimeout(c.get("team"), c.req.valid("param").id, c.req.valid("json")), 200),
  );

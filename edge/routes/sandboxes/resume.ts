import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { resumeSandbox } from "../../services/sandboxes/resume.js";
import { ResumeBody, Sandbox, SandboxIdParam } from "./schemas.js";

const sandboxResponse = (description: string) => ({
  200: { description, content: { "application/json": { schema: Sandbox } } },
  ...openApiErrorResponses,
  ...openApiAgentErrorResponses,
});

const resumeRoute = createRoute({
  method: "post",
  path: "/{id}/resume",
  tags: ["sandboxes"],
  operationId: "resumeSandbox",
  summary: "Resume a paused sandbox",
  description: "Without `timeoutSec` the sandbox gets back the time it had left when it paused.",
  ...scoped("sandboxes:write"),
  request: { params: SandboxIdParam, body: { content: { "application/json": { schema: ResumeBody } } } },
  responses: sandboxResponse("The sandbox, running"),
});

/** POST /v1/sandboxes/{id}/resume */
export const registerResumeSandbox = (app: App) =>
  app.openapi(resumeRoute, async (c) =>
    c.json(await resumeSandbox(c.get("team"), c.req.valid("param").id, c.req.valid("json")), 200),
  );

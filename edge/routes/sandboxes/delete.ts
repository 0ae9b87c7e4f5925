import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { destroySandbox } from "../../services/sandboxes/destroy.js";
import { SandboxIdParam } from "./schemas.js";

const route = createRoute({
  method: "delete",
  path: "/{id}",
  tags: ["sandboxes"],
  operationId: "deleteSandbox",
  summary: "Destroy a sandbox",
  description: "Destroys the sandbox and everything it held. Destroying a stopped sandbox is a no-op.",
  ...scoped("sandboxes:write"),
  request: { params: SandboxIdParam },
  responses: { 204: { description: "Destroyed" }, ...openApiErrorResponses, ...openApiAgentErrorResponses },
});

/** DELETE /v1/sandboxes/{id} */
export const registerDeleteSandbox = (app: App) =>
  app.openapi(route, async (c) => {
    await destroySandbox(c.get("team"), c.req.valid("param").id);
    return c.body(null, 204);
  });

import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { removePath } from "../../services/files/fs.js";
import { SandboxIdParam } from "../sandboxes/schemas.js";
import { PathBody } from "./schemas.js";

const errors = { ...openApiErrorResponses, ...openApiAgentErrorResponses };

const removeRoute = createRoute({
  method: "post",
  path: "/{id}/files/remove",
  tags: ["files"],
  operationId: "removePath",
  summary: "Remove a file or directory tree",
  ...scoped("files:write"),
  request: { params: SandboxIdParam, body: { required: true, content: { "application/json": { schema: PathBody } } } },
  responses: { 204: { description: "Removed" }, ...errors },
});

/** POST /v1/sandboxes/{id}/files/remove */
export const registerRemovePath = (app: App) =>
  app.openapi(removeRoute, async (c) => {
    await removePath(c.get("team"), c.req.valid("param").id, c.req.valid("json"));
    return c.body(null, 204);
  });

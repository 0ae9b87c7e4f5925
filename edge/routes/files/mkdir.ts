import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { makeDir } from "../../services/files/fs.js";
import { SandboxIdParam } from "../sandboxes/schemas.js";
import { EntryResult, PathBody } from "./schemas.js";

const errors = { ...openApiErrorResponses, ...openApiAgentErrorResponses };

const mkdirRoute = createRoute({
  method: "post",
  path: "/{id}/files/mkdir",
  tags: ["files"],
  operationId: "makeDirectory",
  summary: "Create a directory (and its parents)",
  ...scoped("files:write"),
  request: { params: SandboxIdParam, body: { required: true, content: { "application/json": { schema: PathBody } } } },
  responses: {
    200: { description: "The directory", content: { "application/json": { schema: EntryResult } } },
    ...errors,
  },
});

/** POST /v1/sandboxes/{id}/files/mkdir */
export const registerMakeDir = (app: App) =>
  app.openapi(mkdirRoute, async (c) => {
    const entry = await makeDir(c.get("team"), c.req.valid("param").id, c.req.valid("json"));
    return c.json({ entry }, 200);
  });

import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { listDir } from "../../services/files/fs.js";
import { SandboxIdParam } from "../sandboxes/schemas.js";
import { EntryList, ListBody } from "./schemas.js";

const errors = { ...openApiErrorResponses, ...openApiAgentErrorResponses };

const listRoute = createRoute({
  method: "post",
  path: "/{id}/files/list",
  tags: ["files"],
  operationId: "listFiles",
  summary: "List a directory",
  ...scoped("files:read"),
  request: { params: SandboxIdParam, body: { required: true, content: { "application/json": { schema: ListBody } } } },
  responses: { 200: { description: "Entries", content: { "application/json": { schema: EntryList } } }, ...errors },
});

/** POST /v1/sandboxes/{id}/files/list */
export const registerListFiles = (app: App) =>
  app.openapi(listRoute, async (c) => {
    const entries = await listDir(c.get("team"), c.req.valid("param").id, c.req.valid("json"));
    return c.json({ entries }, 200);
  });

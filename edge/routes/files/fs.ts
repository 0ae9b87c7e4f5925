import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { listDir, makeDir, removePath } from "../../services/files/fs.js";
import { apiKeySecurity } from "../router.js";
import { SandboxIdParam } from "../sandboxes/schemas.js";
import { EntryList, EntryResult, ListBody, PathBody } from "./schemas.js";

const errors = { ...openApiErrorResponses, ...openApiAgentErrorResponses };

const listRoute = createRoute({
  method: "post",
  path: "/{id}/files/list",
  tags: ["files"],
  operationId: "listFiles",
  summary: "List a directory",
  security: apiKeySecurity,
  request: { params: SandboxIdParam, body: { required: true, content: { "application/json": { schema: ListBody } } } },
  responses: { 200: { description: "Entries", content: { "application/json": { schema: EntryList } } }, ...errors },
});

const mkdirRoute = createRoute({
  method: "post",
  path: "/{id}/files/mkdir",
  tags: ["files"],
  operationId: "makeDirectory",
  summary: "Create a directory (and its parents)",
  security: apiKeySecurity,
  request: { params: SandboxIdParam, body: { required: true, content: { "application/json": { schema: PathBody } } } },
  responses: {
    200: { description: "The directory", content: { "application/json": { schema: EntryResult } } },
    ...errors,
  },
});

const removeRoute = createRoute({
  method: "post",
  path: "/{id}/files/remove",
  tags: ["files"],
  operationId: "removePath",
  summary: "Remove a file or directory tree",
  security: apiKeySecurity,
  request: { params: SandboxIdParam, body: { required: true, content: { "application/json": { schema: PathBody } } } },
  responses: { 204: { description: "Removed" }, ...errors },
});

/** POST /v1/sandboxes/{id}/files/list */
export const registerListFiles = (app: App) =>
  app.openapi(listRoute, async (c) => {
    const entries = await listDir(c.get("team"), c.req.valid("param").id, c.req.valid("json"));
    return c.json({ entries }, 200);
  });

/** POST /v1/sandboxes/{id}/files/mkdir */
export const registerMakeDir = (app: App) =>
  app.openapi(mkdirRoute, async (c) => {
    const entry = await makeDir(c.get("team"), c.req.valid("param").id, c.req.valid("json"));
    return c.json({ entry }, 200);
  });

/** POST /v1/sandboxes/{id}/files/remove */
export const registerRemovePath = (app: App) =>
  app.openapi(removeRoute, async (c) => {
    await removePath(c.get("team"), c.req.valid("param").id, c.req.valid("json"));
    return c.body(null, 204);
  });

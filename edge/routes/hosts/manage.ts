import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { deleteHost } from "../../services/hosts/delete.js";
import { setHostStatus } from "../../services/hosts/drain.js";
import { listHosts } from "../../services/hosts/list.js";
import { apiKeySecurity } from "../router.js";
import { DeleteHostQuery, Host, HostIdParam } from "./schemas.js";

const listRoute = createRoute({
  method: "get",
  path: "/",
  tags: ["hosts"],
  operationId: "listHosts",
  summary: "List hosts (admin)",
  security: apiKeySecurity,
  responses: {
    200: { description: "Hosts", content: { "application/json": { schema: z.object({ hosts: z.array(Host) }) } } },
    ...openApiErrorResponses,
  },
});

const statusRoute = (verb: "drain" | "activate", description: string) =>
  createRoute({
    method: "post",
    path: `/{id}/${verb}`,
    tags: ["hosts"],
    operationId: `${verb}Host`,
    summary: description,
    security: apiKeySecurity,
    request: { params: HostIdParam },
    responses: {
      200: { description: "The host", content: { "application/json": { schema: Host } } },
      ...openApiErrorResponses,
    },
  });

const drainRoute = statusRoute("drain", "Drain a host: no new sandboxes (admin)");
const activateRoute = statusRoute("activate", "Let a drained host take new sandboxes again (admin)");

const deleteRoute = createRoute({
  method: "delete",
  path: "/{id}",
  tags: ["hosts"],
  operationId: "deleteHost",
  summary: "Remove a host (admin)",
  description: "Refused with 409 (listing `details.sandboxIds`) while sandboxes are placed on it, unless force=true.",
  security: apiKeySecurity,
  request: { params: HostIdParam, query: DeleteHostQuery },
  responses: {
    204: { description: "Removed" },
    409: { description: "Sandboxes are still placed on it (`CONFLICT`)" },
    ...openApiErrorResponses,
  },
});

/** GET /v1/hosts */
export const registerListHosts = (app: App) =>
  app.openapi(listRoute, async (c) => c.json({ hosts: await listHosts(c.get("team")) }, 200));

/** POST /v1/hosts/{id}/drain */
export const registerDrainHost = (app: App) =>
  app.openapi(drainRoute, async (c) =>
    c.json(await setHostStatus(c.get("team"), c.req.valid("param").id, "draining"), 200),
  );

/** POST /v1/hosts/{id}/activate */
export const registerActivateHost = (app: App) =>
  app.openapi(activateRoute, async (c) =>
    c.json(await setHostStatus(c.get("team"), c.req.valid("param").id, "active"), 200),
  );

/** DELETE /v1/hosts/{id} */
export const registerDeleteHost = (app: App) =>
  app.openapi(deleteRoute, async (c) => {
    await deleteHost(c.get("team"), c.req.valid("param").id, { force: c.req.valid("query").force === "true" });
    return c.body(null, 204);
  });

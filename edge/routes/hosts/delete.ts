import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { deleteHost } from "../../services/hosts/delete.js";
import { DeleteHostQuery, HostIdParam } from "./schemas.js";

const deleteRoute = createRoute({
  method: "delete",
  path: "/{id}",
  tags: ["hosts"],
  operationId: "deleteHost",
  summary: "Remove a host (admin)",
  description: "Refused with 409 (listing `details.sandboxIds`) while sandboxes are placed on it, unless force=true.",
  ...scoped("admin"),
  request: { params: HostIdParam, query: DeleteHostQuery },
  responses: {
    204: { description: "Removed" },
    409: { description: "Sandboxes are still placed on it (`CONFLICT`)" },
    ...openApiErrorResponses,
  },
});

/** DELETE /v1/hosts/{id} */
export const registerDeleteHost = (app: App) =>
  app.openapi(deleteRoute, async (c) => {
    await deleteHost(c.get("team"), c.req.valid("param").id, { force: c.req.valid("query").force === "true" });
    return c.body(null, 204);
  });

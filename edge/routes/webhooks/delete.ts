import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { deleteWebhook } from "../../services/webhooks/manage.js";
import { WebhookIdParam } from "./schemas.js";

const route = createRoute({
  method: "delete",
  path: "/{id}",
  tags: ["webhooks"],
  operationId: "deleteWebhook",
  summary: "Delete a webhook (its pending deliveries are dropped)",
  ...scoped("sandboxes:write"),
  request: { params: WebhookIdParam },
  responses: { 204: { description: "Deleted" }, ...openApiErrorResponses },
});

/** DELETE /v1/webhooks/{id} */
export const registerDeleteWebhook = (app: App) =>
  app.openapi(route, async (c) => {
    await deleteWebhook(c.get("team"), c.req.valid("param").id);
    return c.body(null, 204);
  });

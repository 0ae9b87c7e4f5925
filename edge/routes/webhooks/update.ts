import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { updateWebhook } from "../../services/webhooks/manage.js";
import { UpdateWebhookBody, Webhook, WebhookIdParam } from "./schemas.js";

const route = createRoute({
  method: "patch",
  path: "/{id}",
  tags: ["webhooks"],
  operationId: "updateWebhook",
  summary: "Change a webhook's URL, event types, description or enabled (enabling clears its failure count)",
  ...scoped("sandboxes:write"),
  request: { params: WebhookIdParam, body: { content: { "application/json": { schema: UpdateWebhookBody } } } },
  responses: {
    200: { description: "The webhook", content: { "application/json": { schema: Webhook } } },
    ...openApiErrorResponses,
  },
});

/** PATCH /v1/webhooks/{id} */
export const registerUpdateWebhook = (app: App) =>
  app.openapi(route, async (c) =>
    c.json(await updateWebhook(c.get("team"), c.req.valid("param").id, c.req.valid("json")), 200),
  );

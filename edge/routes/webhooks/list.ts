import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { listWebhooks, loadWebhook, toWebhookView } from "../../services/webhooks/manage.js";
import { Webhook, WebhookIdParam } from "./schemas.js";

const listRoute = createRoute({
  method: "get",
  path: "/",
  tags: ["webhooks"],
  operationId: "listWebhooks",
  summary: "List the team's webhooks",
  ...scoped("sandboxes:read"),
  responses: {
    200: {
      description: "Webhooks",
      content: { "application/json": { schema: z.object({ webhooks: z.array(Webhook) }) } },
    },
    ...openApiErrorResponses,
  },
});

const getRoute = createRoute({
  method: "get",
  path: "/{id}",
  tags: ["webhooks"],
  operationId: "getWebhook",
  summary: "Get a webhook",
  ...scoped("sandboxes:read"),
  request: { params: WebhookIdParam },
  responses: {
    200: { description: "The webhook", content: { "application/json": { schema: Webhook } } },
    ...openApiErrorResponses,
  },
});

/** GET /v1/webhooks */
export const registerListWebhooks = (app: App) =>
  app.openapi(listRoute, async (c) => c.json({ webhooks: await listWebhooks(c.get("team")) }, 200));

/** GET /v1/webhooks/{id} */
export const registerGetWebhook = (app: App) =>
  app.openapi(getRoute, async (c) =>
    c.json(toWebhookView(await loadWebhook(c.get("team"), c.req.valid("param").id)), 200),
  );

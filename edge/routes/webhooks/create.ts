import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { createWebhook } from "../../services/webhooks/manage.js";
import { CreatedWebhook, CreateWebhookBody } from "./schemas.js";

const route = createRoute({
  method: "post",
  path: "/",
  tags: ["webhooks"],
  operationId: "createWebhook",
  summary: "Create a webhook (its signing secret is shown once)",
  description:
    "The URL must be http(s) and, unless the operator set WRENN_WEBHOOKS_ALLOW_PRIVATE=true, reach a public address: loopback, private, link-local and metadata addresses are refused (400).",
  ...scoped("sandboxes:write"),
  request: { body: { content: { "application/json": { schema: CreateWebhookBody } } } },
  responses: {
    201: { description: "The webhook and its secret", content: { "application/json": { schema: CreatedWebhook } } },
    ...openApiErrorResponses,
  },
});

/** POST /v1/webhooks */
export const registerCreateWebhook = (app: App) =>
  app.openapi(route, async (c) => c.json(await createWebhook(c.get("team"), c.req.valid("json")), 201));

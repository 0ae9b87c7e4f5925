import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { createApiKey } from "../../services/api-keys/create.js";
import { apiKeySecurity } from "../router.js";
import { CreateApiKeyBody, CreatedApiKey } from "./schemas.js";

const createKeyRoute = createRoute({
  method: "post",
  path: "/",
  tags: ["api-keys"],
  operationId: "createApiKey",
  summary: "Create an API key (its secret is shown once)",
  security: apiKeySecurity,
  request: { body: { content: { "application/json": { schema: CreateApiKeyBody } } } },
  responses: {
    201: { description: "The key and its secret", content: { "application/json": { schema: CreatedApiKey } } },
    ...openApiErrorResponses,
  },
});

/** POST /v1/api-keys */
export const registerCreateApiKey = (app: App) =>
  app.openapi(createKeyRoute, async (c) => c.json(await createApiKey(c.get("team"), c.req.valid("json")), 201));

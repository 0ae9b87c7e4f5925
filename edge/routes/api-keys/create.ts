import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { createApiKey } from "../../services/api-keys/create.js";
import { CreateApiKeyBody, CreatedApiKey } from "./schemas.js";

const createKeyRoute = createRoute({
  method: "post",
  path: "/",
  tags: ["api-keys"],
  operationId: "createApiKey",
  summary: "Create an API key (its secret is shown once)",
  ...scoped("keys:write"),
  request: { body: { content: { "application/json": { schema: CreateApiKeyBody } } } },
  responses: {
    201: { description: "The key and its secret", content: { "application/json": { schema: CreatedApiKey } } },
    ...openApiErrorResponses,
  },
});

/** POST /v1/api-keys */
export const registerCreateApiKey = (app: App) =>
  app.openapi(createKeyRoute, async (c) => {
    const { expiresAt, ...body } = c.req.valid("json");
    const input = expiresAt === undefined ? body : { ...body, expiresAt: new Date(expiresAt) };
    return c.json(await createApiKey(c.get("team"), input), 201);
  });

import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { revokeApiKey } from "../../services/api-keys/revoke.js";
import { ApiKey, ApiKeyIdParam } from "./schemas.js";

const revokeKeyRoute = createRoute({
  method: "delete",
  path: "/{id}",
  tags: ["api-keys"],
  operationId: "revokeApiKey",
  summary: "Revoke an API key",
  ...scoped("keys:write"),
  request: { params: ApiKeyIdParam },
  responses: {
    200: { description: "The revoked key", content: { "application/json": { schema: ApiKey } } },
    ...openApiErrorResponses,
  },
});

/** DELETE /v1/api-keys/{id} */
export const registerRevokeApiKey = (app: App) =>
  app.openapi(revokeKeyRoute, async (c) => c.json(await revokeApiKey(c.get("team"), c.req.valid("param").id), 200));

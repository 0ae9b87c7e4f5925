import { createRoute } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { type UpdateApiKeyInput, updateApiKey } from "../../services/api-keys/update.js";
import { ApiKey, ApiKeyIdParam, UpdateApiKeyBody } from "./schemas.js";

const updateKeyRoute = createRoute({
  method: "patch",
  path: "/{id}",
  tags: ["api-keys"],
  operationId: "updateApiKey",
  summary: "Change an API key's name, scopes, expiry or (admin) rate limit",
  description:
    "Non-admin keys may change only their own team's non-admin keys, and never grant more scopes or a later " +
    "expiry than they hold. A change is seen by every edge on the key's next rate-limited request.",
  ...scoped("keys:write"),
  request: {
    params: ApiKeyIdParam,
    body: { required: true, content: { "application/json": { schema: UpdateApiKeyBody } } },
  },
  responses: {
    200: { description: "The changed key", content: { "application/json": { schema: ApiKey } } },
    ...openApiErrorResponses,
  },
});

/** PATCH /v1/api-keys/{id} */
export const registerUpdateApiKey = (app: App) =>
  app.openapi(updateKeyRoute, async (c) => {
    const { expiresAt, ...body } = c.req.valid("json");
    const input: UpdateApiKeyInput =
      expiresAt === undefined ? body : { ...body, expiresAt: expiresAt === null ? null : new Date(expiresAt) };
    return c.json(await updateApiKey(c.get("team"), c.req.valid("param").id, input), 200);
  });
